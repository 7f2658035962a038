"""go1-walk: track a commanded base velocity (vx, vy, yaw rate) on flat ground.

The usual legged-locomotion recipe (Rudin et al. 2022, "Learning to walk in minutes"):
PD joint-position targets around the default pose at 50 Hz, velocity commands
resampled during the episode, reward terms for tracking and regularization (scaled by
the control dt), terminations on base contact or excessive tilt, time-outs flagged as
truncation. The policy sees only what the real robot senses (IMU, joint encoders, the
command, its last action); the critic additionally gets privileged simulator state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import mujoco
import torch

from roboreal.envs.math_utils import projected_gravity, quat_rotate_inverse
from roboreal.envs.mujoco_env import MujocoTaskEnv, ObsTerm, TaskCfg
from roboreal.envs.randomization import PushTerm, RandomizationCfg, RangeTerm
from roboreal.robots.model import foot_sensor_slices
from roboreal.robots.needs import RobotNeeds
from roboreal.control.action import ActionMapping


def _default_randomization() -> RandomizationCfg:
    # Wide enough that the policy holds up beyond it (sim2sim's held-out "heavy" preset: gains
    # x0.8-1.2, mass x0.75-1.3, friction 0.3-1.6, 0.8 m/s pushes every 4 s). Measured
    # (benchmarks/go1_walk.py, README "Quadruped on a CPU budget"): with the earlier, narrower
    # ranges (friction only on the floor, +-1 kg on the base, motors +-10 %, 0.5 m/s pushes every
    # 8 s) 15 of 32 heavy sim2sim episodes fell, with these 8, and PPO learns as fast in 20 minutes.
    return RandomizationCfg(
        enabled=True,
        friction=RangeTerm(range=(0.4, 1.25), mode="startup", targets=("@floor",)),  # the ground: its contacts take it
        mass_scale=RangeTerm(range=(0.85, 1.15), mode="startup"),  # every body
        added_mass=RangeTerm(range=(-1.0, 1.5), mode="startup", targets=("@base",)),  # robot.yaml sites.base_body
        com_offset=RangeTerm(range=(-0.02, 0.02), mode="startup", targets=("@base",)),
        kp_scale=RangeTerm(range=(0.85, 1.15), mode="startup"),
        kd_scale=RangeTerm(range=(0.8, 1.2), mode="startup"),
        motor_strength=RangeTerm(range=(0.85, 1.15), mode="startup"),
        push=PushTerm(interval_s=5.0, max_velocity=(0.7, 0.7)),
    )


@dataclass
class Go1WalkCfg(TaskCfg):
    robot: str = "go1"
    episode_length_s: float = 20.0
    physics_dt: float = 0.005
    decimation: int = 4  # 50 Hz control
    action_scale: float = 0.25  # rad per unit action around the default pose
    command_resample_s: float = 10.0
    command_vx: tuple[float, float] = (-1.0, 1.0)
    command_vy: tuple[float, float] = (-0.5, 0.5)
    command_yaw_rate: tuple[float, float] = (-1.0, 1.0)
    tracking_sigma: float = 0.25
    # m; None: 0.875 x the base height of the robot's standing pose (its `home` keyframe;
    # go1: 0.875 x 0.32 = 0.28, legged_gym's value for it)
    base_height_target: float | None = None
    # m: the base below this height counts as fallen when the model has no `trunk_touch`
    # sensor; None: 0.375 x the standing height (go1: 0.12)
    fallen_base_height: float | None = None
    feet_air_time_target: float = 0.5
    # "offset" (legged_gym): each touchdown earns (air time - target), negative for steps
    # shorter than the target, which punishes the first shuffling steps of a learner;
    # "capped": each touchdown earns min(air time, target), never negative.
    # (measured: with "offset" PPO settled on standing still; benchmarks/go1_walk.py)
    feet_air_time_reward: Literal["offset", "capped"] = "capped"
    contact_force_threshold: float = 1.0  # N, a foot touching the ground
    # m above a foot on the floor (in the standing pose): the feet_clearance term wants a foot that
    # moves sideways to be this high (MuJoCo Playground's Go1 joystick uses 0.1 for the foot centre)
    foot_clearance_target: float = 0.08
    reward_dt_scaled: bool = True
    # Each joint target within the robot's safety.max_target_rate * control period of the previous
    # one, as the deployed safety chain's RateLimit holds it; off, the policy never meets that
    # limit until it is on the robot (measured: benchmarks/go1_walk.py, README "Quadruped on a CPU budget")
    rate_limit_targets: bool = False
    # The critic also reads what the domain randomization drew for each robot (friction, masses,
    # gains, motor strength, ...; `Randomizer.features`), as legged_gym-style privileged critics do.
    # Off: measured on heavy's ranges, 48 of 128 sim2sim heavy episodes fell where 13 did without it
    # (benchmarks/go1_walk.py, README "Quadruped on a CPU budget")
    critic_reads_physics: bool = False
    rewards: dict[str, float] = field(default_factory=lambda: {
        "tracking_lin_vel": 1.0,
        "tracking_ang_vel": 0.5,
        "lin_vel_z": -2.0,
        "ang_vel_xy": -0.05,
        "orientation": -1.0,
        "base_height": -10.0,
        "torques": -2e-4,
        "dof_acc": -2.5e-7,
        "action_rate": -0.01,
        "feet_air_time": 1.0,
        "dof_pos_limits": -10.0,
        # sum over feet of |height above the floor - foot_clearance_target| * sqrt(|horizontal
        # velocity|): a foot that moves is lifted (Playground's Go1 joystick term); off by default
        "feet_clearance": 0.0,
        # sum over feet in contact of |horizontal velocity|^2; off by default
        "feet_slip": 0.0,
        # 1 on a fall (any task has it); off: -200 (-4 per fall) learned slower and fell as often
        # under sim2sim's heavy preset (benchmarks/go1_walk.py, README "Quadruped on a CPU budget")
        "termination": 0.0,
    })
    observation_noise: dict[str, float] = field(default_factory=lambda: {
        "base_ang_vel": 0.2, "projected_gravity": 0.05, "joint_pos": 0.01, "joint_vel": 1.5})
    randomization: RandomizationCfg = field(default_factory=_default_randomization)


class Go1WalkEnv(MujocoTaskEnv):
    """Velocity tracking for any 4-legged robot (``env.robot=...``): its robot.yaml names the
    IMU site, the four feet (touch sensors are added when the MJCF has none) and the base
    body on its free joint; the standing pose is the `home` keyframe (derived from robot.yaml's
    default pose when the MJCF has none)."""

    task_name = "go1-walk"
    needs = RobotNeeds(kinds=("quadruped",), control_mode="position", sites=("imu", "feet", "base_body"), feet=4,
                       free_base=True, ros=("imu", "cmd_vel"))
    cfg: Go1WalkCfg

    def _action_mapping(self) -> ActionMapping:
        # targets around the default pose, clipped into the limits minus the safety margin
        # (as the safety chain clips them on the robot)
        return ActionMapping.for_robot(self.robot, "joint_position_absolute", self.cfg.action_scale)

    def _init_task_buffers(self) -> None:
        n = self.num_envs
        self.commands = torch.zeros(n, 3, device=self.device)
        self.command_time = torch.zeros(n, device=self.device)
        self.feet_air_time = torch.zeros(n, 4, device=self.device)
        self.last_contacts = torch.zeros(n, 4, dtype=torch.bool, device=self.device)
        self.last_joint_vel = torch.zeros(n, len(self.actuated), device=self.device)
        self.targets = self.default_joint_pos.repeat(n, 1)
        self.max_target_step = self.robot.safety.max_target_rate * self.control_dt
        self.kp = torch.tensor(self.robot.array("kp"), dtype=torch.float32, device=self.device)
        self.kd = torch.tensor(self.robot.array("kd"), dtype=torch.float32, device=self.device)
        self.torque_limit = torch.tensor(self.robot.array("torque_limit"), dtype=torch.float32, device=self.device)
        self.soft_lower = torch.tensor(self.robot.lower, dtype=torch.float32, device=self.device)
        self.soft_upper = torch.tensor(self.robot.upper, dtype=torch.float32, device=self.device)
        self.foot_touch = foot_sensor_slices(self.model, self.robot, "touch")
        self.foot_position = foot_sensor_slices(self.model, self.robot, "pos")
        self.foot_velocity = foot_sensor_slices(self.model, self.robot, "vel")
        self.has_trunk_touch = "trunk_touch" in self._sensor_slices
        key = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_KEY, "home")  # added at load if the MJCF lacks it
        self.home_qpos = torch.tensor(self.model.key_qpos[key], dtype=torch.float32, device=self.device)
        standing = float(self.home_qpos[2])
        home = mujoco.MjData(self.model)
        mujoco.mj_resetDataKeyframe(self.model, home, key)
        mujoco.mj_forward(self.model, home)
        # a foot on the floor: the lowest foot of the standing pose (go1's rear feet stand 1 cm above it)
        self.foot_floor_height = min(float(home.sensordata[s][2]) for s in self.foot_position)
        c = self.cfg
        self.base_height_target = c.base_height_target if c.base_height_target is not None else 0.875 * standing
        self.fallen_height = c.fallen_base_height if c.fallen_base_height is not None else 0.375 * standing
        self.command_steps = max(1, int(round(self.cfg.command_resample_s / self.control_dt)))

    # ----- state helpers -----
    @property
    def base_quat(self) -> torch.Tensor:
        return self.qpos[:, 3:7]

    @property
    def base_lin_vel(self) -> torch.Tensor:
        # free-joint linear velocity is in the world frame; express it in the body frame
        return quat_rotate_inverse(self.base_quat, self.qvel[:, 0:3])

    @property
    def base_ang_vel(self) -> torch.Tensor:
        return self.qvel[:, 3:6]  # free-joint angular velocity is already in the body frame

    @property
    def foot_contacts(self) -> torch.Tensor:
        forces = torch.cat([self.sensordata[:, s] for s in self.foot_touch], dim=-1)
        return forces > self.cfg.contact_force_threshold

    def _foot_readings(self, slices: list[slice]) -> torch.Tensor:
        """(N, 4, 3): one 3-vector sensor per foot."""
        return torch.stack([self.sensordata[:, s] for s in slices], dim=1)

    def _action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        targets = self.action_mapping.to_command(actions)
        if self.cfg.rate_limit_targets:  # the previous target is in the limits, so the result stays in them
            targets = self.targets + (targets - self.targets).clamp(-self.max_target_step, self.max_target_step)
        self.targets = targets
        return self.targets

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        policy = [
            ObsTerm("base_ang_vel", "imu.angular_velocity", scale=0.25),
            ObsTerm("projected_gravity", "imu.projected_gravity"),
            ObsTerm("velocity_command", "cmd_vel"),
            ObsTerm("joint_pos", "joint_states.position", offset="default_pose"),
            ObsTerm("joint_vel", "joint_states.velocity", scale=0.05),
            ObsTerm("last_action", "policy.last_action"),
        ]
        critic = [
            *policy,
            ObsTerm("base_lin_vel", "privileged", scale=2.0, fn=lambda: self.base_lin_vel),
            ObsTerm("base_height", "privileged", fn=lambda: self.qpos[:, 2:3]),
            ObsTerm("foot_contacts", "privileged", fn=lambda: self.foot_contacts.float()),
        ]
        if self.cfg.critic_reads_physics:
            critic.append(ObsTerm("randomized_physics", "privileged", fn=self.randomizer.features))
        return {"policy": policy, "critic": critic}

    def _readings(self) -> dict:
        # IMU (sensors imu_quat, imu_gyro), joints and the last action come from the base class
        return {**super()._readings(), "cmd_vel": lambda: self.commands}

    def _initial_state(self, env_ids: torch.Tensor):
        n = len(env_ids)
        qpos = self.home_qpos.repeat(n, 1)
        qpos[:, self.joint_qpos_idx] += self.rand(n, len(self.actuated), low=-0.1, high=0.1)
        qvel = torch.zeros(n, self.model.nv, device=self.device)
        qvel[:, 0:6] = self.rand(n, 6, low=-0.3, high=0.3)
        return qpos, qvel

    def _reset_task(self, env_ids: torch.Tensor) -> None:
        self._resample_commands(env_ids)
        self.feet_air_time[env_ids] = 0.0
        self.last_contacts[env_ids] = False
        self.last_joint_vel[env_ids] = 0.0
        self.targets[env_ids] = self.default_joint_pos

    def _resample_commands(self, env_ids: torch.Tensor) -> None:
        n = len(env_ids)
        c = self.cfg
        self.commands[env_ids, 0] = self.rand(n, low=c.command_vx[0], high=c.command_vx[1])
        self.commands[env_ids, 1] = self.rand(n, low=c.command_vy[0], high=c.command_vy[1])
        self.commands[env_ids, 2] = self.rand(n, low=c.command_yaw_rate[0], high=c.command_yaw_rate[1])
        # tiny commands are "stand still"
        small = self.commands[env_ids, :2].norm(dim=-1) < 0.2
        self.commands[env_ids[small], :2] = 0.0

    def _post_physics_step(self) -> None:
        due = (self.episode_step % self.command_steps == 0).nonzero(as_tuple=False).squeeze(-1)
        if len(due):
            self._resample_commands(due)

    def _terminations(self) -> dict[str, torch.Tensor]:
        up = projected_gravity(self.base_quat)[:, 2]
        terms = {"tilt": up > -torch.cos(torch.tensor(self.robot.safety.tilt_limit))}
        if self.has_trunk_touch:
            terms["base_contact"] = self.sensor("trunk_touch")[:, 0] > 1.0
        else:
            terms["base_contact"] = self.qpos[:, 2] < self.fallen_height
        return terms

    # ----- reward terms (raw values; weights and dt scaling in cfg) -----
    def _reward_tracking_lin_vel(self) -> torch.Tensor:
        err = (self.commands[:, :2] - self.base_lin_vel[:, :2]).square().sum(-1)
        return torch.exp(-err / self.cfg.tracking_sigma)

    def _reward_tracking_ang_vel(self) -> torch.Tensor:
        err = (self.commands[:, 2] - self.base_ang_vel[:, 2]).square()
        return torch.exp(-err / self.cfg.tracking_sigma)

    def _reward_lin_vel_z(self) -> torch.Tensor:
        return self.base_lin_vel[:, 2].square()

    def _reward_ang_vel_xy(self) -> torch.Tensor:
        return self.base_ang_vel[:, :2].square().sum(-1)

    def _reward_orientation(self) -> torch.Tensor:
        return projected_gravity(self.base_quat)[:, :2].square().sum(-1)

    def _reward_base_height(self) -> torch.Tensor:
        return (self.qpos[:, 2] - self.base_height_target).square()

    def _torques(self) -> torch.Tensor:
        tau = self.kp * (self.targets - self.joint_pos) - self.kd * self.joint_vel
        return torch.maximum(torch.minimum(tau, self.torque_limit), -self.torque_limit)

    def _reward_torques(self) -> torch.Tensor:
        return self._torques().square().sum(-1)

    def _reward_dof_acc(self) -> torch.Tensor:
        acc = (self.joint_vel - self.last_joint_vel) / self.control_dt
        self.last_joint_vel = self.joint_vel.clone()
        return acc.square().sum(-1)

    def _reward_action_rate(self) -> torch.Tensor:
        return (self.actions - self.last_actions).square().sum(-1)

    def _reward_feet_air_time(self) -> torch.Tensor:
        contact = self.foot_contacts
        first_contact = (self.feet_air_time > 0) & contact
        self.feet_air_time += self.control_dt
        target = self.cfg.feet_air_time_target
        if self.cfg.feet_air_time_reward == "capped":
            earned = self.feet_air_time.clamp(max=target)
        else:
            earned = self.feet_air_time - target
        reward = (earned * first_contact).sum(-1)
        reward *= self.commands[:, :2].norm(dim=-1) > 0.1  # no reward for stepping in place
        self.feet_air_time *= ~contact
        return reward

    def _reward_feet_clearance(self) -> torch.Tensor:
        height = self._foot_readings(self.foot_position)[..., 2] - self.foot_floor_height
        speed = self._foot_readings(self.foot_velocity)[..., :2].norm(dim=-1)
        return ((height - self.cfg.foot_clearance_target).abs() * speed.sqrt()).sum(-1)

    def _reward_feet_slip(self) -> torch.Tensor:
        sliding = self._foot_readings(self.foot_velocity)[..., :2].square().sum(-1)
        return (sliding * self.foot_contacts).sum(-1)

    def _reward_dof_pos_limits(self) -> torch.Tensor:
        q = self.joint_pos
        return ((self.soft_lower - q).clamp(min=0) + (q - self.soft_upper).clamp(min=0)).sum(-1)

    def deployment_inputs(self) -> dict:
        """What a deployment must feed the policy (written into the bundle manifest): the
        velocity command in the base frame, within the ranges it was trained on."""
        c = self.cfg
        return {"command": {"frame": "base", "fields": ["linear.x", "linear.y", "angular.z"],
                            "ranges": {"min": [c.command_vx[0], c.command_vy[0], c.command_yaw_rate[0]],
                                       "max": [c.command_vx[1], c.command_vy[1], c.command_yaw_rate[1]]}}}

    def velocity_tracking_error(self) -> torch.Tensor:
        """|commanded - actual| planar velocity (m/s), per env: the figure benchmarks report."""
        return (self.commands[:, :2] - self.base_lin_vel[:, :2]).norm(dim=-1)
