"""Panda manipulation tasks, goal-conditioned (observation / achieved_goal / desired_goal) but for
`panda-reach-vision`.

- `panda-reach`: move the end-effector (TCP) to a random target; dense reward
  (-distance, m) or sparse (`panda-reach-sparse`: -1 per step until within 5 cm).
  Success = within 5 cm at the end of the episode.
- `panda-pick`: pick the cube out of the bin and bring it to a goal position; sparse.
- `panda-pick-vision`, `panda-reach-vision`: the same seen through cameras; the policy
  group lacks the cube's pose (pick) or the goal (reach: not goal-conditioned, the goal
  marker is drawn in the images), the `critic` group keeps them.

Actions are joint-position *deltas* added to the previous joint targets (the command a
ros2_control forward position controller takes), clipped into the position limits minus
``safety.joint_position_margin`` as the safety chain clips them on the robot
(`roboreal.control.action.ActionMapping`), plus a gripper command for pick
(`GripperMapping`, the same mapping the chain's `SafetyChain.gripper` uses).
The reward is a function of (achieved_goal, desired_goal) only, so `compute_reward`
recomputes it exactly for hindsight relabeling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import mujoco
import numpy as np
import torch

from roboreal.envs.mujoco_env import MujocoTaskEnv, ObsTerm, TaskCfg
from roboreal.envs.randomization import CameraRandomizationCfg, RandomizationCfg
from roboreal.envs.sim.camera_renderer import RenderCfg, style_marker
from roboreal.robots.cameras import CameraSpec
from roboreal.robots.model import actuator_ids, base_body
from roboreal.robots.needs import RobotNeeds
from roboreal.control.action import ActionMapping, GripperMapping


@dataclass
class PandaCfg(TaskCfg):
    robot: str = "panda"
    physics_dt: float = 0.005
    decimation: int = 8  # 25 Hz control
    action_scale: float = 0.05  # rad of joint-target change per step per unit action
    distance_threshold: float = 0.05  # m: success radius
    initial_joint_noise: float = 0.1  # rad around the default pose
    # Goal box in the robot base frame (m). Defaults keep targets above the table, in reach.
    goal_low: tuple[float, float, float] = (0.3, -0.3, 0.15)
    goal_high: tuple[float, float, float] = (0.65, 0.3, 0.55)


@dataclass
class PandaReachCfg(PandaCfg):
    episode_length_s: float = 2.0  # 50 control steps
    rewards: dict[str, float] = field(default_factory=lambda: {"distance": -1.0, "not_reached": 0.0})


@dataclass
class PandaPickCfg(PandaCfg):
    episode_length_s: float = 4.0  # 100 control steps
    rewards: dict[str, float] = field(default_factory=lambda: {"distance": 0.0, "not_reached": -1.0})
    goal_in_air_fraction: float = 0.5  # the rest of the goals lie on the table
    goal_air_height: tuple[float, float] = (0.05, 0.25)  # m above the table top
    object_xy_noise: float = 0.04  # m around the bin centre


# A fixed camera in front of the robot looking down into the bin (the cell's camera). 30 deg:
# the bin fills the frame and the cube is ~6x8 px at 64x64 (at 45 deg ~3x4 px: DAgger from pixels
# reached 0.78 at best where 30 deg reached 0.91; README "Pick from pixels").
FRONT_CAMERA = CameraSpec(name="front", pos=(1.0, 0.0, 0.55), lookat=(0.5, 0.0, 0.05), fovy=30.0,
                          width=64, height=64)


@dataclass
class PandaPickVisionCfg(PandaPickCfg):
    """panda-pick seen through cameras: the policy gets the front and wrist images and the
    robot's own state, not the cube's pose (the critic and the reward still use it)."""

    cameras: list[CameraSpec] = field(default_factory=lambda: [FRONT_CAMERA])
    image_observations: tuple[str, ...] = ("front", "wrist")
    randomization: RandomizationCfg = field(default_factory=lambda: RandomizationCfg(
        enabled=True, camera=CameraRandomizationCfg(position=0.01, rotation=0.02, fovy=2.0, light=(0.7, 1.3),
                                                    colors=("table", "object"), color=0.08, noise=3.0)))


# A fixed camera at the front right of the table, above it, looking down at the goal box
# (PandaCfg.goal_low/high: its corners project to pixels 9.0..55.2 of the 64x64 image) and the arm
# (its upper links leave the image when the hand is at the box's top).
OVERVIEW_CAMERA = CameraSpec(name="overview", pos=(1.2, 0.7, 1.1), lookat=(0.45, 0.0, 0.3), fovy=45.0,
                             width=64, height=64)


@dataclass
class PandaReachVisionCfg(PandaReachCfg):
    """panda-reach seen through a camera: the policy gets the images and the arm's own state,
    not the goal, which it must find in the images (the goal marker is drawn, and made larger
    and opaque so it is a few pixels wide); the critic and the reward still use the goal."""

    cameras: list[CameraSpec] = field(default_factory=lambda: [OVERVIEW_CAMERA])
    # One fixed camera places the goal across its line of sight, not along it (depth): a policy
    # from `overview` alone stopped a median 9 cm short along the camera's ray and 2 cm across it.
    # The wrist camera (robot.yaml's) sees the marker in those last centimetres (DAgger, same
    # budget: 0.27 success with `overview` alone, 0.97 with both; README "Cameras").
    image_observations: tuple[str, ...] = ("overview", "wrist")
    render: RenderCfg = field(default_factory=lambda: RenderCfg(hide_bodies=()))  # the goal marker is seen
    goal_marker_radius: float = 0.03  # m (panda's model.xml: 0.02, translucent)
    goal_marker_rgba: tuple[float, float, float, float] = (0.1, 0.85, 0.1, 1.0)
    randomization: RandomizationCfg = field(default_factory=lambda: RandomizationCfg(
        enabled=True, camera=CameraRandomizationCfg(position=0.01, rotation=0.02, fovy=2.0, light=(0.7, 1.3),
                                                    colors=("table", "goal"), color=0.08, noise=3.0)))


class PandaEnv(MujocoTaskEnv):
    """Arm tasks for any position-controlled arm (``env.robot=...``), whatever its joint
    count: robot.yaml names the end-effector site (and the base link, else the parent of the
    first joint's body); a goal marker is added when the MJCF has none."""

    goal_conditioned = True
    needs = RobotNeeds(kinds=("manipulator",), control_mode="position", sites=("end_effector",), ros=("goal",))
    cfg: PandaCfg

    def _action_mapping(self) -> ActionMapping:
        # delta targets, clipped into the limits minus the safety margin (as the safety chain
        # clips them on the robot)
        return ActionMapping.for_robot(self.robot, "joint_position_delta", self.cfg.action_scale)

    def _init_task_buffers(self) -> None:
        n = self.num_envs
        m = self.model
        self.targets = self.default_joint_pos.repeat(n, 1)
        self.lower = torch.tensor(self.robot.lower, dtype=torch.float32, device=self.device)
        self.upper = torch.tensor(self.robot.upper, dtype=torch.float32, device=self.device)
        self.goal = torch.zeros(n, 3, device=self.device)
        arm_act, gripper_act = actuator_ids(self.robot, m)
        self.arm_act = arm_act.tolist()
        self.gripper_act = -1 if gripper_act is None else int(gripper_act)
        self.gripper_mapping = (GripperMapping.for_robot(self.robot) if self.robot.gripper
                                else GripperMapping(open=0.04, closed=0.0))
        self.gripper_open = self.gripper_mapping.open
        self.gripper_closed = self.gripper_mapping.closed
        self.gripper_cmd = torch.full((n,), self.gripper_open, device=self.device)
        self.finger_qpos_idx = torch.tensor([m.jnt_qposadr[self._jid(g)] for g in self.robot.gripper.joints],
                                            device=self.device) if self.robot.gripper else None
        base = base_body(m, self.robot)
        self.base_name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, base) if base > 0 else None
        data = mujoco.MjData(m)
        mujoco.mj_kinematics(m, data)
        self.base_pos = torch.tensor(data.xpos[base], dtype=torch.float32, device=self.device)
        self.goal_low = self.base_pos + torch.tensor(self.cfg.goal_low, device=self.device)
        self.goal_high = self.base_pos + torch.tensor(self.cfg.goal_high, device=self.device)
        self.goal_mocap = m.body_mocapid[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")]

    @property
    def ee_pos(self) -> torch.Tensor:
        """TCP position from the current joints: the forward kinematics the robot's observation
        builder runs (the model's ee_pos sensor would lag the joints by one physics step)."""
        return self.site_position(self.robot.sites.end_effector)

    def _arm_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        ctrl = torch.zeros(self.num_envs, self.model.nu, device=self.device)
        self.targets = self.action_mapping.to_command(actions[:, :self.action_mapping.size], self.targets)
        ctrl[:, self.arm_act] = self.targets
        if self.gripper_act >= 0:
            ctrl[:, self.gripper_act] = self.gripper_cmd
        return ctrl

    def _initial_arm(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        qpos = torch.tensor(self.model.qpos0, dtype=torch.float32, device=self.device).repeat(n, 1)
        noise = self.cfg.initial_joint_noise
        arm = self.default_joint_pos + self.rand(n, len(self.actuated), low=-noise, high=noise)
        qpos[:, self.joint_qpos_idx] = torch.maximum(torch.minimum(arm, self.upper), self.lower)
        if self.finger_qpos_idx is not None:
            qpos[:, self.finger_qpos_idx] = self.gripper_open
        return qpos, torch.zeros(n, self.model.nv, device=self.device)

    def _reset_arm_buffers(self, env_ids: torch.Tensor) -> None:
        self.targets[env_ids] = self.joint_pos[env_ids]
        self.gripper_cmd[env_ids] = self.gripper_open

    # ----- goals and rewards -----
    def achieved_goal(self) -> torch.Tensor:
        raise NotImplementedError

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor, info: dict | None = None):
        """Vectorized reward from goals alone (what HER relabels with)."""
        d = (achieved_goal - desired_goal).norm(dim=-1)
        reward = torch.zeros_like(d)
        w = self.cfg.rewards
        if w.get("distance", 0.0):
            reward = reward + w["distance"] * d
        if w.get("not_reached", 0.0):
            reward = reward + w["not_reached"] * (d > self.cfg.distance_threshold).float()
        return reward

    def _goal_distance(self) -> torch.Tensor:
        return (self.achieved_goal() - self.goal).norm(dim=-1)

    def _reward_distance(self) -> torch.Tensor:
        return self._goal_distance()

    def _reward_not_reached(self) -> torch.Tensor:
        return (self._goal_distance() > self.cfg.distance_threshold).float()

    def _success(self) -> torch.Tensor:
        return self._goal_distance() <= self.cfg.distance_threshold

    def deployment_inputs(self) -> dict:
        """What a deployment must feed the policy (written into the bundle manifest): goal
        (and object) positions in the robot base frame, which is the sim's world frame; a
        pose stamped with one of `frame_ids` is taken as is, anything else is refused."""
        base = self.base_pos.cpu().tolist()
        frame_ids = ["", "world"] + ([self.base_name] if self.base_name and max(map(abs, base)) < 1e-9 else [])
        return {"goal": {"frame": "world", "frame_ids": frame_ids, "base_position": base,
                         "box": {"min": self.goal_low.cpu().tolist(), "max": self.goal_high.cpu().tolist()}}}

    def _render_setup(self, data: mujoco.MjData, env_id: int) -> None:
        if self.goal_mocap >= 0:
            data.mocap_pos[self.goal_mocap] = self.goal[env_id].cpu().numpy()

    def _images(self, env_ids: torch.Tensor | None = None):
        # the goal marker is drawn where each world's goal is (the physics state holds no mocap
        # poses); a task that hides it (render.hide_bodies) draws nothing there
        if self.camera_renderer is not None and self.goal_mocap >= 0:
            if not hasattr(self, "_mocap_pos"):
                m = self.model
                nominal = m.body_pos[[int(np.flatnonzero(m.body_mocapid == k)[0]) for k in range(m.nmocap)]]
                self._mocap_pos = torch.tensor(nominal, dtype=torch.float32, device=self.device).repeat(
                    self.num_envs, 1, 1)
            self._mocap_pos[:, self.goal_mocap] = self.goal
            self.camera_renderer.set_mocap_pos(self._mocap_pos)
        return super()._images(env_ids)


class PandaReachEnv(PandaEnv):
    task_name = "panda-reach"
    cfg: PandaReachCfg

    def _action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        return self._arm_ctrl(actions)

    def achieved_goal(self) -> torch.Tensor:
        return self.ee_pos

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        return {
            "observation": [
                ObsTerm("joint_pos", "joint_states.position", offset="default_pose"),
                ObsTerm("joint_vel", "joint_states.velocity", scale=0.1),
                ObsTerm("ee_pos", "forward_kinematics.end_effector"),
            ],
            "achieved_goal": [ObsTerm("ee_pos", "forward_kinematics.end_effector")],
            "desired_goal": [ObsTerm("goal", "goal_pose.position")],
        }

    def _readings(self) -> dict:
        return {**super()._readings(), "goal_pos": lambda: self.goal}  # ee_pos: the base's forward kinematics

    def _initial_state(self, env_ids: torch.Tensor):
        return self._initial_arm(len(env_ids))

    def _reset_task(self, env_ids: torch.Tensor) -> None:
        self._reset_arm_buffers(env_ids)
        self.goal[env_ids] = self.rand(len(env_ids), 3, low=self.goal_low, high=self.goal_high)


class PandaPickEnv(PandaEnv):
    task_name = "panda-pick"
    needs = RobotNeeds(kinds=("manipulator",), control_mode="position", sites=("end_effector",), gripper=True,
                       ros=("goal", "object_pose", "gripper_commands"), scene=(("joint", "object_joint"),
                                                                               ("sensor", "object_pos")))
    cfg: PandaPickCfg

    def _action_size(self) -> int:
        return len(self.actuated) + 1  # + gripper: > 0 opens, < 0 closes (width proportional)

    def _init_task_buffers(self) -> None:
        super()._init_task_buffers()
        m = self.model
        self.object_joint = self._jid("object_joint")
        self.object_qpos = int(m.jnt_qposadr[self.object_joint])
        self.object_qvel = int(m.jnt_dofadr[self.object_joint])
        bin_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "bin")
        data = mujoco.MjData(m)
        mujoco.mj_forward(m, data)
        obj_body = m.jnt_bodyid[self.object_joint]
        self.object_rest = torch.tensor(m.qpos0[self.object_qpos:self.object_qpos + 7], dtype=torch.float32,
                                        device=self.device)
        self.bin_center = torch.tensor(data.xpos[bin_id] if bin_id >= 0 else data.xpos[obj_body],
                                       dtype=torch.float32, device=self.device)
        self.rest_z = float(self.object_rest[2])  # the cube's centre height resting in the bin

    def _action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        self.gripper_cmd = self.gripper_mapping.to_command(actions[:, self.action_mapping.size])
        return self._arm_ctrl(actions)

    @property
    def object_pos(self) -> torch.Tensor:
        return self.sensor("object_pos")

    def achieved_goal(self) -> torch.Tensor:
        return self.object_pos

    def _gripper_width(self) -> torch.Tensor:
        return self.qpos[:, self.finger_qpos_idx].sum(-1, keepdim=True)

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        return {
            "observation": [
                ObsTerm("joint_pos", "joint_states.position", offset="default_pose"),
                ObsTerm("joint_vel", "joint_states.velocity", scale=0.1),
                ObsTerm("gripper_width", "joint_states.position[gripper]"),
                ObsTerm("ee_pos", "forward_kinematics.end_effector"),
                ObsTerm("object_pos", "object_pose.position"),
                ObsTerm("object_rel_pos", "object_pose.position", relative_to="end_effector"),
                ObsTerm("object_vel", "object_pose.velocity", scale=0.1),
            ],
            "achieved_goal": [ObsTerm("object_pos", "object_pose.position")],
            "desired_goal": [ObsTerm("goal", "goal_pose.position")],
        }

    def _readings(self) -> dict:
        return {**super()._readings(), "goal_pos": lambda: self.goal, "gripper_width": self._gripper_width,
                "object_pos": lambda: self.object_pos,
                "object_vel": lambda: self.qvel[:, self.object_qvel:self.object_qvel + 3]}

    def _initial_state(self, env_ids: torch.Tensor):
        n = len(env_ids)
        qpos, qvel = self._initial_arm(n)
        obj = self.object_rest.repeat(n, 1)
        r = self.cfg.object_xy_noise
        obj[:, 0:2] = self.bin_center[0:2] + self.rand(n, 2, low=-r, high=r)
        qpos[:, self.object_qpos:self.object_qpos + 7] = obj
        return qpos, qvel

    def _reset_task(self, env_ids: torch.Tensor) -> None:
        self._reset_arm_buffers(env_ids)
        n = len(env_ids)
        goal = self.rand(n, 3, low=self.goal_low, high=self.goal_high)
        lo, hi = self.cfg.goal_air_height
        in_air = self.rand(n) < self.cfg.goal_in_air_fraction
        height = torch.where(in_air, self.rand(n, low=lo, high=hi), torch.zeros(n, device=self.device))
        goal[:, 2] = self.rest_z + height
        self.goal[env_ids] = goal

    def _terminations(self) -> dict[str, torch.Tensor]:
        return {"object_dropped": self.object_pos[:, 2] < self.rest_z - 0.1}


class PandaPickVisionEnv(PandaPickEnv):
    """`panda-pick` from pixels: no object pose in the policy's observation."""

    task_name = "panda-pick-vision"
    needs = RobotNeeds(kinds=("manipulator",), control_mode="position", sites=("end_effector",), gripper=True,
                       ros=("goal", "gripper_commands"), scene=(("joint", "object_joint"), ("sensor", "object_pos")))
    cfg: PandaPickVisionCfg

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        full = super()._observation_terms()
        seen = [t for t in full["observation"] if not t.source.startswith("object_pose")]
        # asymmetric actor-critic: the critic (and a privileged teacher) keeps the cube's state
        return {**full, "observation": seen, "critic": [*full["observation"], *full["desired_goal"]]}


class PandaReachVisionEnv(PandaReachEnv):
    """`panda-reach` from pixels: the goal is seen (the marker in the images), not given. Not
    goal-conditioned: the policy group is the arm's state alone and the ``critic`` group adds
    the goal (asymmetric actor-critic, or a privileged teacher); there is no goal group a
    goal-relabeling learner (HER) could rewrite, since a relabeled goal would not be in the image."""

    task_name = "panda-reach-vision"
    goal_conditioned = False
    # the goal is not an input of a deployment (it is in the images): no goal topic
    needs = RobotNeeds(kinds=("manipulator",), control_mode="position", sites=("end_effector",))
    cfg: PandaReachVisionCfg

    def _init_task_buffers(self) -> None:
        super()._init_task_buffers()
        # the marker as the cameras should see it (visual only: it collides with nothing); set
        # before the renderer copies the model
        r = float(self.cfg.goal_marker_radius)
        marker = style_marker(self.model, "goal", r, self.cfg.goal_marker_rgba)
        if self.backend == "warp":  # the device model's copy the ray tracer reads
            import warp as wp

            wp.to_torch(self.sim._m.geom_size)[..., marker.tolist(), 0] = r

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        full = super()._observation_terms()
        # asymmetric actor-critic: the critic (and a privileged teacher) keeps the goal
        return {"policy": full["observation"], "critic": [*full["observation"], *full["desired_goal"]]}

    def deployment_inputs(self) -> dict:
        return {}  # nothing besides the robot's sensors and the cameras
