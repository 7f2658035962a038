"""One MuJoCo world that behaves like the robot a ROS 2 driver talks to (no ROS here).

`SimRobot` owns a single `MjModel`/`MjData` built from a `RobotSpec`, holds joint
targets (position robots: the MJCF position servos, whose kp/kv are the spec's gains)
or efforts (force robots), optionally per-joint PD gains sent with the targets (drivers
that take kp/kd with every command, `set_targets(q, kp, kd)` / `set_gains`), and reads
back what a real robot's driver would report:
joint positions/velocities/efforts, the IMU (orientation, angular velocity, linear
acceleration including gravity, like a real accelerometer) and the end-effector pose.
`sim_bridge.py` wraps it in a ROS 2 node; tests can drive it directly.

`TrajectoryFollower` turns a `trajectory_msgs/JointTrajectory`-like list of points into
position targets over time (linear interpolation, see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from roboreal.config import ConfigError
from roboreal.robots.model import (actuator_ids, build_model,  # robot.yaml's gains and ranges written in
                                   imu_sensor_slices, target_aliases)
from roboreal.robots.spec import RobotSpec


@dataclass
class ImuReading:
    orientation_wxyz: np.ndarray  # (4,) world-frame orientation of the IMU site
    angular_velocity: np.ndarray  # (3,) rad/s, IMU frame
    linear_acceleration: np.ndarray  # (3,) m/s^2, IMU frame, includes the reaction to gravity


class SimRobot:
    """A MuJoCo simulation of `spec`'s robot, commanded like the real one."""

    def __init__(self, spec: RobotSpec, *, initial_pose: str = "default", randomization=None, seed: int = 0):
        """`randomization`: an `envs.randomization.RandomizationCfg` (or a preset name, see
        `randomization_preset`), sampled once at startup by the training envs' own
        `Randomizer` (per-episode terms are sampled once too; pushes are not applied)."""
        self.spec = spec

        self.model = build_model(spec)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.position_control = spec.control_mode == "position"
        self.rng = np.random.default_rng(seed)
        # Randomize first: the gains read below (and restored by reset) are then the randomized ones.
        self.randomization: dict[str, list[float]] = self._randomize(randomization, seed) if randomization else {}

        def joint_id(name: str) -> int:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ConfigError("joints", f"{name!r} is not a joint of {spec.model}")
            return jid

        # Joints reported in JointState: the spec's joints, then the gripper's fingers.
        gripper_joints = [g for g in (spec.gripper.joints if spec.gripper else ()) if g not in spec.joint_names]
        self.joint_names: list[str] = spec.joint_names + gripper_joints
        jids = [joint_id(n) for n in self.joint_names]
        self._qadr = np.array([m.jnt_qposadr[j] for j in jids])
        self._vadr = np.array([m.jnt_dofadr[j] for j in jids])

        # Actuators of the actuated joints, in spec order.
        self.actuated_names = spec.actuated_names
        self._act, gripper_act = actuator_ids(spec, m)
        self._act_qadr = np.array([m.jnt_qposadr[joint_id(n)] for n in self.actuated_names])
        if self.position_control:
            self._ctrl_lo = np.maximum(m.actuator_ctrlrange[self._act, 0], spec.lower)
            self._ctrl_hi = np.minimum(m.actuator_ctrlrange[self._act, 1], spec.upper)
            no_range = ~m.actuator_ctrllimited[self._act].astype(bool)
            self._ctrl_lo[no_range] = spec.lower[no_range]
            self._ctrl_hi[no_range] = spec.upper[no_range]
        else:
            limit = spec.array("torque_limit")
            self._ctrl_lo, self._ctrl_hi = -limit, limit

        # Per-joint PD gains of the position servos. A MuJoCo <position> actuator is
        # force = gainprm[0] * ctrl + biasprm[0] + biasprm[1] * q + biasprm[2] * qdot with
        # gainprm[0] = kp, biasprm = (0, -kp, -kv): i.e. kp (ctrl - q) - kv qdot, clipped to
        # forcerange. Gains can be changed at run time only for such servos on a joint with
        # gear 1 (ctrl and forces in joint units); `reset()` restores the loaded gains.
        a = self._act
        self.gains_settable = bool(
            self.position_control
            and np.all(m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT)
            and np.all(m.actuator_gaintype[a] == mujoco.mjtGain.mjGAIN_FIXED)
            and np.all(m.actuator_biastype[a] == mujoco.mjtBias.mjBIAS_AFFINE)
            and np.all(m.actuator_dyntype[a] == mujoco.mjtDyn.mjDYN_NONE)
            and np.allclose(m.actuator_gear[a, 0], 1.0) and np.allclose(m.actuator_gear[a, 1:], 0.0)
            and np.allclose(m.actuator_biasprm[a, 0], 0.0)
            and np.allclose(m.actuator_biasprm[a, 1], -m.actuator_gainprm[a, 0]))
        self._init_gainprm = m.actuator_gainprm[a].copy()
        self._init_biasprm = m.actuator_biasprm[a].copy()

        # Gripper: the one actuator that drives none of the spec's joints (build_model checked it).
        self._gripper_act: int | None = gripper_act
        if spec.gripper is not None:
            self._gripper_qadr = np.array([m.jnt_qposadr[joint_id(g)] for g in spec.gripper.joints])
            g = spec.gripper
            self.gripper_range = (min(g.open, g.closed), max(g.open, g.closed))

        # IMU sensors on the IMU site (quadrupeds).
        self._imu = imu_sensor_slices(m, spec) if spec.sites.imu is not None else None
        self._ee_site = (mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, spec.sites.end_effector)
                         if spec.sites.end_effector else -1)

        # A free-floating base (legged robots): its free joint, for ground-truth scoring.
        self._base_qadr = self._base_dadr = None
        base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, spec.sites.base_body) if spec.sites.base_body else -1
        if base >= 0 and m.body_jntnum[base] >= 1 and m.jnt_type[m.body_jntadr[base]] == mujoco.mjtJoint.mjJNT_FREE:
            self._base_qadr, self._base_dadr = int(m.jnt_qposadr[m.body_jntadr[base]]), int(m.jnt_dofadr[m.body_jntadr[base]])

        # The tracked object of pick tasks (robot.yaml `ros.object_pose`): the body of the
        # model's one free joint (a manipulator's base is fixed, so that is the object).
        self._object_body = -1
        if spec.ros.object_pose:
            free = [j for j in range(m.njnt) if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
            if len(free) != 1:
                raise ConfigError("ros.object_pose", f"{spec.model} needs exactly one free body (the object) to "
                                  f"publish its pose, it has {len(free)}")
            self._object_body = int(m.jnt_bodyid[free[0]])


        self.initial_pose = initial_pose
        self._init_qpos, self._init_targets, self._init_gripper = self._initial_state(initial_pose)
        self.targets = self._init_targets.copy()  # position targets (position robots) or efforts (force robots)
        self.gripper_target = self._init_gripper
        self.reset()

    # ----- setup -----
    def _randomize(self, cfg, seed: int) -> dict[str, list[float]]:
        """Apply a randomization config once with the training envs' `Randomizer` (one world:
        this model); returns what was sampled."""
        import torch

        from roboreal.envs.randomization import Randomizer, give_friction_to_targets, randomization_preset
        from roboreal.envs.sim.backend import RANDOMIZED_FIELDS

        if isinstance(cfg, str):
            cfg = randomization_preset(cfg)
        if not cfg.enabled:
            return {}

        class OneWorld:  # the slice of the batched-sim interface the Randomizer uses
            backend, num_envs, randomizable = "mujoco", 1, frozenset(RANDOMIZED_FIELDS)

            def __init__(self, model):
                self.model, self.models = model, [model]

            def ensure_per_world_fields(self, fields) -> None:
                pass

        m = self.model
        dofs = np.array([m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)]
                         for j in self.spec.actuated_joints])
        aliases = target_aliases(self.spec, m)
        give_friction_to_targets(cfg, m, aliases)  # as the training envs do: targets' friction is their contacts'
        randomizer = Randomizer(cfg, OneWorld(m), 1, seed, torch.device("cpu"), actuator_joint_ids=dofs,
                                aliases=aliases)
        randomizer.on_startup()
        return randomizer.describe(0)

    def _initial_state(self, pose: str) -> tuple[np.ndarray, np.ndarray, float]:
        m, d = self.model, self.data
        keys = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_KEY, k) for k in range(m.nkey)]
        if pose == "default":
            # The `home` keyframe (if any) places the base and the scene; the joints then
            # take the spec's default pose.
            if "home" in keys:
                mujoco.mj_resetDataKeyframe(m, d, keys.index("home"))
            else:
                mujoco.mj_resetData(m, d)
            for j in self.spec.joints:
                d.qpos[m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)]] = j.default
            gripper = self.spec.gripper.open if self.spec.gripper else 0.0
            if self.spec.gripper:
                d.qpos[self._gripper_qadr] = gripper
        elif pose in keys:
            mujoco.mj_resetDataKeyframe(m, d, keys.index(pose))
            gripper = float(np.mean(d.qpos[self._gripper_qadr])) if self.spec.gripper else 0.0
        else:
            raise ConfigError("initial_pose", f"{pose!r} is neither 'default' nor a keyframe of {self.spec.model} "
                              f"(keyframes: {keys})")
        qpos = d.qpos.copy()
        if self.position_control:
            targets = np.clip(qpos[self._act_qadr], self._ctrl_lo, self._ctrl_hi)
        else:
            targets = np.zeros(len(self._act))
        return qpos, targets, gripper

    # ----- commands -----
    def reset(self) -> None:
        """Back to the initial pose, at rest, holding it (position robots) / zero force."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:] = self._init_qpos
        m.actuator_gainprm[self._act] = self._init_gainprm
        m.actuator_biasprm[self._act] = self._init_biasprm
        self.targets = self._init_targets.copy()
        self.gripper_target = self._init_gripper
        self._apply_ctrl()
        mujoco.mj_forward(m, d)

    def set_targets(self, values: np.ndarray, kp: np.ndarray | None = None, kd: np.ndarray | None = None) -> None:
        """Position targets (position robots) or efforts (force robots) of the actuated joints.

        With `kp` and `kd` (position robots only, one value per actuated joint, >= 0) the
        servos' gains are set too, as a driver that takes (q, kp, kd) per joint with every
        command does; without them the gains stay as they are. Everything is checked before
        anything changes: a bad command raises ValueError and changes nothing."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.targets.shape:
            raise ValueError(f"expected {self.targets.size} values (actuated joints {self.actuated_names}), "
                             f"got {values.size}")
        if not np.all(np.isfinite(values)):
            raise ValueError("command contains NaN or inf")
        if (kp is None) != (kd is None):
            raise ValueError("pass both kp and kd, or neither")
        if kp is not None:
            kp, kd = self._check_gains(kp, kd)
            self._write_gains(kp, kd)
        self.targets = np.clip(values, self._ctrl_lo, self._ctrl_hi)

    def set_gains(self, kp: np.ndarray, kd: np.ndarray) -> None:
        """Per-joint PD gains of the position servos (N m/rad and N m s/rad, or N/m, N s/m),
        actuated joints in spec order; both >= 0 (kp = 0: no pull towards the target, only
        damping). Held until changed or `reset()` (which restores the model's gains)."""
        self._write_gains(*self._check_gains(kp, kd))

    @property
    def gains(self) -> tuple[np.ndarray, np.ndarray]:
        """(kp, kd) the servos apply now, actuated joints in spec order."""
        m = self.model
        return m.actuator_gainprm[self._act, 0].copy(), -m.actuator_biasprm[self._act, 2].copy()

    def _check_gains(self, kp, kd) -> tuple[np.ndarray, np.ndarray]:
        if not self.gains_settable:
            raise ValueError(f"robot {self.spec.name!r}: gains can be set only on position servos (MuJoCo "
                             f"<position> actuators with gear 1) of a position-controlled robot")
        kp = np.asarray(kp, dtype=np.float64)
        kd = np.asarray(kd, dtype=np.float64)
        n = len(self._act)
        if kp.shape != (n,) or kd.shape != (n,):
            raise ValueError(f"expected {n} kp and {n} kd values (actuated joints {self.actuated_names}), "
                             f"got {kp.size} and {kd.size}")
        if not (np.all(np.isfinite(kp)) and np.all(np.isfinite(kd))):
            raise ValueError("gains contain NaN or inf")
        if np.any(kp < 0) or np.any(kd < 0):
            raise ValueError(f"gains must be >= 0, got kp {kp.tolist()} kd {kd.tolist()}")
        return kp, kd

    def _write_gains(self, kp: np.ndarray, kd: np.ndarray) -> None:
        m = self.model
        m.actuator_gainprm[self._act, 0] = kp
        m.actuator_biasprm[self._act, 1] = -kp
        m.actuator_biasprm[self._act, 2] = -kd

    def set_gripper(self, opening: float) -> None:
        if self._gripper_act is None:
            raise ValueError(f"robot {self.spec.name!r} has no gripper")
        if not np.isfinite(opening):
            raise ValueError("gripper command is NaN or inf")
        self.gripper_target = float(np.clip(opening, *self.gripper_range))

    def _apply_ctrl(self) -> None:
        self.data.ctrl[self._act] = self.targets
        if self._gripper_act is not None:
            self.data.ctrl[self._gripper_act] = self.gripper_target

    def step(self, n: int = 1) -> None:
        if n > 0:
            self._apply_ctrl()
            mujoco.mj_step(self.model, self.data, nstep=n)

    # ----- state -----
    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def has_gripper(self) -> bool:
        return self._gripper_act is not None

    @property
    def has_imu(self) -> bool:
        return self._imu is not None

    @property
    def has_end_effector(self) -> bool:
        return self._ee_site >= 0

    @property
    def has_object(self) -> bool:
        return self._object_body >= 0

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), orientation wxyz (4,)) of the tracked object in the world frame."""
        if self._object_body < 0:
            raise ValueError(f"robot {self.spec.name!r} tracks no object (robot.yaml ros.object_pose)")
        return self.data.xpos[self._object_body].copy(), self.data.xquat[self._object_body].copy()

    @property
    def has_free_base(self) -> bool:
        """The robot's base body (robot.yaml sites.base_body) floats on a free joint (legged robots)."""
        return self._base_qadr is not None

    def base_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ground truth of a free-floating base: (position (3,), orientation wxyz (4,), linear
        velocity (3,) and angular velocity (3,) in the base frame). No real driver reports
        this; simulations use it to score a policy (sim2sim over DDS)."""
        if self._base_qadr is None:
            raise ValueError(f"robot {self.spec.name!r} has no free-floating base (sites.base_body)")
        q, v = self.data.qpos[self._base_qadr:self._base_qadr + 7], self.data.qvel[self._base_dadr:self._base_dadr + 6]
        world_to_base = np.zeros(4)
        mujoco.mju_negQuat(world_to_base, q[3:7])
        lin = np.zeros(3)
        mujoco.mju_rotVecQuat(lin, v[0:3], world_to_base)  # free joints: linear velocity in the world frame
        return q[0:3].copy(), q[3:7].copy(), lin, v[3:6].copy()  # angular velocity: already in the body frame

    def actuated_positions(self) -> np.ndarray:
        return self.data.qpos[self._act_qadr].copy()

    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position, velocity, effort) of `joint_names`; effort = actuator force on the joint."""
        d = self.data
        return d.qpos[self._qadr].copy(), d.qvel[self._vadr].copy(), d.qfrc_actuator[self._vadr].copy()

    def imu(self) -> ImuReading:
        if self._imu is None:
            raise ValueError(f"robot {self.spec.name!r} has no IMU")
        s = self.data.sensordata
        return ImuReading(s[self._imu["quat"]].copy(), s[self._imu["gyro"]].copy(), s[self._imu["acc"]].copy())

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), orientation wxyz (4,)) of the end-effector site in the world frame."""
        if self._ee_site < 0:
            raise ValueError(f"robot {self.spec.name!r} has no end-effector site")
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._ee_site])
        return self.data.site_xpos[self._ee_site].copy(), quat


class TrajectoryFollower:
    """Position targets from a `JointTrajectory`: linear interpolation in time.

    Starting from the targets held when the trajectory arrives (time 0), the target moves
    linearly to each point's positions at its `time_from_start`, then holds the last
    point. Joints the message does not name keep their targets. A point at time 0 is a
    jump. Velocities/accelerations in the points are ignored (this is a simple
    interpolating forward controller, not ros2_control's spline trajectory controller).
    """

    def __init__(self, start: np.ndarray, joint_index: np.ndarray, times: np.ndarray, positions: np.ndarray,
                 t0: float):
        self.start = np.asarray(start, dtype=np.float64).copy()
        self.joint_index = np.asarray(joint_index, dtype=int)
        order = np.argsort(times, kind="stable")
        self.times = np.concatenate([[0.0], np.asarray(times, dtype=np.float64)[order]])
        first = self.start[self.joint_index]
        self.positions = np.vstack([first[None], np.asarray(positions, dtype=np.float64)[order]])
        self.t0 = t0

    def targets(self, t: float) -> np.ndarray:
        out = self.start.copy()
        tau = t - self.t0
        times, pos = self.times, self.positions
        if tau >= times[-1]:
            out[self.joint_index] = pos[-1]
            return out
        k = int(np.searchsorted(times, tau, side="right"))  # times[k-1] <= tau < times[k]
        k = max(k, 1)
        span = times[k] - times[k - 1]
        w = 1.0 if span <= 0 else (tau - times[k - 1]) / span
        out[self.joint_index] = pos[k - 1] + w * (pos[k] - pos[k - 1])
        return out

    def done(self, t: float) -> bool:
        return t - self.t0 >= self.times[-1]
