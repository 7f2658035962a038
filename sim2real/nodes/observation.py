"""The policy's observation, rebuilt from what a real robot publishes (no ROS import).

`ObservationBuilder` reads a bundle manifest's ``observation.terms`` and reproduces, term
by term, what the simulated env computed in training (`MujocoTaskEnv._compute_observations`):

    raw value (from the robot's messages)  ->  minus offset ("default_pose")  ->  times scale  ->  clip

The node hands it plain values taken from ROS messages (names, arrays, quaternions in ROS
order x, y, z, w); tests hand it the same from a simulated state. Sources (the manifest's
``source`` field) and how each is computed:

| source | value |
|---|---|
| ``joint_states.position`` / ``.velocity`` | the manifest's joints (actuated, spec order), BY NAME from JointState |
| ``joint_states.position[gripper]`` | sum of the gripper joints' positions (the finger opening, m) |
| ``joint_states.position[J]`` / ``velocity[J]`` | one joint; unlimited hinges (cartpole's pole) wrapped to (-pi, pi] |
| ``imu.angular_velocity`` | Imu angular_velocity (IMU frame = base frame, as the sim's gyro site) |
| ``imu.projected_gravity`` | (0, 0, -1) rotated into the IMU frame by the inverse of the Imu orientation |
| ``cmd_vel`` | Twist (linear.x, linear.y, angular.z); zeros until one arrives |
| ``policy.last_action`` | set by the node (`set_last_action`, see its ``last_action_source``), clipped to [-1, 1] |
| ``forward_kinematics.end_effector`` | MuJoCo FK of the measured joints on the robot's MJCF, ``sites.end_effector`` |
| ``goal_pose.position`` | PoseStamped position (robot base frame = the sim's world frame) |
| ``object_pose.position`` | PoseStamped of the tracked object; a term named ``*_rel_pos``: object minus end-effector |
| ``object_pose.velocity`` | finite difference of successive object poses (by header stamp), world frame |

Readiness: `missing()` lists what has never been received that the observation or the
safety chain needs (every spec joint's position and velocity, the gripper joints if a
term reads them, the IMU for quadrupeds). Until it is empty the node publishes nothing.
A joint whose value is NaN/inf stays in the vector as such: the safety chain sees the
same NaN in `robot_state()` and latches its fault mode (NaN never becomes a command).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from roboreal.robots.spec import RobotSpec
from roboreal.sim2real.safety.types import RobotState

KNOWN_OFFSETS = (None, "default_pose")
_SINGLE = re.compile(r"^joint_states\.(position|velocity)\[([^\]]+)\]$")


class ObservationError(ValueError):
    """The manifest asks for an observation this builder cannot produce (names the term)."""


def projected_gravity_xyzw(q_xyzw: Sequence[float]) -> np.ndarray:
    """Gravity direction (0, 0, -1) expressed in the frame of orientation `q` (ROS order
    x, y, z, w; world <- sensor). NaN for a zero or non-finite quaternion."""
    x, y, z, w = (float(v) for v in q_xyzw)
    n = math.sqrt(x * x + y * y + z * z + w * w) if all(map(math.isfinite, (x, y, z, w))) else math.nan
    if not (n > 0 and math.isfinite(n)):
        return np.full(3, np.nan)
    x, y, z, w = x / n, y / n, z / n, w / n
    # R^T (0, 0, -1) = minus the third row of R(q)
    return -np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])


def wrap_angle(a: float) -> float:
    """To (-pi, pi], as the sim's atan2(sin a, cos a)."""
    return math.atan2(math.sin(a), math.cos(a)) if math.isfinite(a) else a


def applied_action(mapping, values: np.ndarray, previous: np.ndarray | None, action: np.ndarray) -> np.ndarray:
    """The safety chain's output (targets/forces of `mapping.joints`) mapped back to the
    normalized action that would have produced it, clipped to [-1, 1]; dims beyond the
    mapping (a gripper) are kept from `action`. Delta mappings need the previous output."""
    scale = np.asarray(mapping.scale, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if mapping.type == "joint_position_delta":
        arm = (values - (values if previous is None else np.asarray(previous, dtype=np.float64))) / scale
    else:
        arm = (values - np.asarray(mapping.offset, dtype=np.float64)) / scale
    out = np.array(action, dtype=np.float64)
    out[:mapping.size] = np.clip(arm, -1.0, 1.0)
    return out


@dataclass
class _Term:
    name: str
    size: int
    scale: float
    clip: float | None
    source: str
    offset: np.ndarray | None
    fn: Callable[[], np.ndarray]


class ObservationBuilder:
    """Builds the policy's observation vector from a robot's messages, as the manifest says.

    >>> b = ObservationBuilder(bundle.manifest, spec)
    >>> b.set_joint_state(msg.name, msg.position, msg.velocity, arrival=t)
    >>> b.set_imu((qx, qy, qz, qw), (wx, wy, wz), arrival=t)
    >>> b.set_cmd_vel(vx, vy, wz, arrival=t)
    >>> if not b.missing(): obs = b.build(); state = b.robot_state()
    """

    def __init__(self, manifest: dict, spec: RobotSpec):
        self.manifest, self.spec = manifest, spec
        self.joints: list[str] = list(manifest["joints"])  # actuated, the policy's order
        self.default_pose = np.asarray(manifest["default_pose"], dtype=np.float64)
        gripper = list(spec.gripper.joints) if spec.gripper else []
        # Every joint the builder tracks: all spec joints (the chain checks them all), then the gripper's.
        self.tracked: list[str] = list(spec.joint_names) + [g for g in gripper if g not in spec.joint_names]
        self.index = {n: i for i, n in enumerate(self.tracked)}
        n = len(self.tracked)
        self.q = np.full(n, np.nan)
        self.dq = np.full(n, np.nan)
        self.q_time = np.full(n, -np.inf)  # arrival time of each joint's last position
        self.dq_time = np.full(n, -np.inf)
        self.joint_header_stamp: float | None = None  # header stamp (s) of the last JointState
        self.required = list(spec.joint_names)  # position and velocity of every spec joint
        self._act_idx = np.array([self.index[j] for j in self.joints], dtype=int)
        self._spec_idx = np.array([self.index[j] for j in spec.joint_names], dtype=int)

        self.imu_quat = np.full(4, np.nan)  # x, y, z, w
        self.imu_gyro = np.full(3, np.nan)
        self.imu_accel: np.ndarray | None = None  # not observed; the safety chain checks it
        self.imu_time: float | None = None
        self.cmd_vel = np.zeros(3)
        self.cmd_time: float | None = None
        self.goal = np.full(3, np.nan)
        self.goal_time: float | None = None
        self.object_pos = np.full(3, np.nan)
        self.object_vel = np.zeros(3)
        self.object_time: float | None = None
        self._object_stamp: float | None = None
        self.last_action: np.ndarray | None = None

        self.needs_imu = spec.kind == "quadruped"
        self.needs_goal = self.needs_object = False
        self._fk = None
        self.terms: list[_Term] = [self._make_term(t) for t in manifest["observation"]["terms"]]
        self.size = sum(t.size for t in self.terms)
        if self.size != int(manifest["observation"]["size"]):
            raise ObservationError(f"observation terms add up to {self.size}, the manifest says "
                                   f"{manifest['observation']['size']}")

    # ------------------------------------------------------------------ terms
    def _make_term(self, t: dict) -> _Term:
        name, source, size = str(t["name"]), str(t["source"]), int(t["size"])
        offset = t.get("offset")
        if offset not in KNOWN_OFFSETS:
            raise ObservationError(f"observation term {name!r}: unknown offset {offset!r} (known: default_pose)")
        fn = self._source_fn(name, source, size)
        off = None
        if offset == "default_pose":
            if size != len(self.default_pose):
                raise ObservationError(f"observation term {name!r}: offset default_pose has {len(self.default_pose)} "
                                       f"values, the term {size}")
            off = self.default_pose
        clip = t.get("clip")
        term = _Term(name, size, float(t.get("scale", 1.0)), None if clip is None else float(clip), source, off, fn)
        got = np.asarray(fn()).shape
        if got != (size,):
            raise ObservationError(f"observation term {name!r} ({source}) gives {got[0] if got else 0} values on "
                                   f"robot {self.spec.name}, the manifest says {size}")
        return term

    def _source_fn(self, name: str, source: str, size: int) -> Callable[[], np.ndarray]:
        spec = self.spec
        if source == "joint_states.position":
            return lambda: self.q[self._act_idx]
        if source == "joint_states.velocity":
            return lambda: self.dq[self._act_idx]
        if source == "joint_states.position[gripper]":
            if spec.gripper is None:
                raise ObservationError(f"observation term {name!r} needs a gripper; robot {spec.name} has none")
            idx = np.array([self.index[g] for g in spec.gripper.joints], dtype=int)
            self.required += [g for g in spec.gripper.joints if g not in self.required]
            return lambda: np.array([self.q[idx].sum()])
        m = _SINGLE.match(source)
        if m:
            field, joint = m.groups()
            if joint not in self.index:
                raise ObservationError(f"observation term {name!r}: {joint!r} is not a joint of robot {spec.name} "
                                       f"({self.tracked})")
            i = self.index[joint]
            if field == "velocity":
                return lambda: self.dq[i:i + 1].copy()
            if self._is_continuous_hinge(joint):
                return lambda: np.array([wrap_angle(self.q[i])])
            return lambda: self.q[i:i + 1].copy()
        if source == "imu.angular_velocity":
            self.needs_imu = True
            return lambda: self.imu_gyro.copy()
        if source == "imu.projected_gravity":
            self.needs_imu = True
            return lambda: projected_gravity_xyzw(self.imu_quat)
        if source == "cmd_vel":
            return lambda: self.cmd_vel.copy()
        if source == "policy.last_action":
            self._last_action_size = size
            return lambda: np.zeros(size) if self.last_action is None else self.last_action.copy()
        if source == "forward_kinematics.end_effector":
            fk = self._forward_kinematics()
            return lambda: fk(self.q)
        if source == "goal_pose.position":
            self.needs_goal = True
            return lambda: self.goal.copy()
        if source == "object_pose.position":
            self.needs_object = True
            if name.endswith("_rel_pos"):  # sim: object_pos - ee_pos (the manifest's source cannot say so)
                fk = self._forward_kinematics()
                return lambda: self.object_pos - fk(self.q)
            return lambda: self.object_pos.copy()
        if source == "object_pose.velocity":
            self.needs_object = True
            return lambda: self.object_vel.copy()
        raise ObservationError(f"observation term {name!r}: source {source!r} cannot be built from robot messages")

    def _is_continuous_hinge(self, joint: str) -> bool:
        import mujoco

        model = self._model()
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
        hinge = int(mujoco.mjtJoint.mjJNT_HINGE)
        return bool(jid >= 0 and int(model.jnt_type[jid]) == hinge and not model.jnt_limited[jid])

    def _model(self):
        if not hasattr(self, "_mj_model"):
            import mujoco

            self._mj_model = mujoco.MjModel.from_xml_path(str(self.spec.model_path))
        return self._mj_model

    def _forward_kinematics(self) -> Callable[[np.ndarray], np.ndarray]:
        """FK of the end-effector site for measured joint positions (tracked order), on the
        same MJCF the sim uses; joints not measured stay at the model's qpos0."""
        if self._fk is not None:
            return self._fk
        import mujoco

        site = self.spec.sites.end_effector
        if site is None:
            raise ObservationError(f"forward_kinematics.end_effector: robot {self.spec.name} has no sites.end_effector")
        model = self._model()
        data = mujoco.MjData(model)
        sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        pairs = []
        for i, name in enumerate(self.tracked):
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid >= 0 and int(model.jnt_type[jid]) in (int(mujoco.mjtJoint.mjJNT_HINGE),
                                                         int(mujoco.mjtJoint.mjJNT_SLIDE)):
                pairs.append((i, int(model.jnt_qposadr[jid])))
        src = np.array([p[0] for p in pairs], dtype=int)
        adr = np.array([p[1] for p in pairs], dtype=int)

        def fk(q: np.ndarray) -> np.ndarray:
            vals = q[src]
            if not np.isfinite(vals).all():
                return np.full(3, np.nan)
            data.qpos[:] = model.qpos0
            data.qpos[adr] = vals
            mujoco.mj_kinematics(model, data)
            return data.site_xpos[sid].copy()

        self._fk = fk
        return fk

    # ------------------------------------------------------------------ inputs
    def set_joint_state(self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float],
                        arrival: float, header_stamp: float | None = None) -> int:
        """Merge a JointState (by name; unknown names ignored). Returns how many tracked joints
        it updated. ROS allows empty position/velocity arrays; any other length mismatch, or a
        name given twice, is refused with ValueError (the message is dropped as a whole)."""
        names = list(names)
        pos = np.asarray(position, dtype=np.float64).ravel()
        vel = np.asarray(velocity, dtype=np.float64).ravel()
        for what, arr in (("position", pos), ("velocity", vel)):
            if len(arr) not in (0, len(names)):
                raise ValueError(f"JointState has {len(names)} names but {len(arr)} {what} values")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"JointState names joint(s) {dup} more than once")
        hits = 0
        for k, name in enumerate(names):
            i = self.index.get(name)
            if i is None:
                continue
            hits += 1
            if len(pos):
                self.q[i], self.q_time[i] = pos[k], arrival
            if len(vel):
                self.dq[i], self.dq_time[i] = vel[k], arrival
        if hits:
            self.joint_header_stamp = header_stamp
        return hits

    def set_imu(self, orientation_xyzw: Sequence[float], angular_velocity: Sequence[float], arrival: float,
                linear_acceleration: Sequence[float] | None = None) -> None:
        """An Imu reading; `arrival`: when it was measured (the watchdog's IMU stamp)."""
        self.imu_quat = np.asarray(orientation_xyzw, dtype=np.float64).reshape(4).copy()
        self.imu_gyro = np.asarray(angular_velocity, dtype=np.float64).reshape(3).copy()
        if linear_acceleration is not None:
            self.imu_accel = np.asarray(linear_acceleration, dtype=np.float64).reshape(3).copy()
        self.imu_time = arrival

    def set_cmd_vel(self, vx: float, vy: float, wz: float, arrival: float) -> None:
        self.cmd_vel = np.array([vx, vy, wz], dtype=np.float64)
        self.cmd_time = arrival

    def set_goal(self, position: Sequence[float], arrival: float) -> None:
        self.goal = np.asarray(position, dtype=np.float64).reshape(3).copy()
        self.goal_time = arrival

    def set_object_pose(self, position: Sequence[float], arrival: float, header_stamp: float | None = None) -> None:
        """Object position; its velocity is the finite difference to the previous pose (by
        header stamp, else arrival time), zero for the first pose."""
        p = np.asarray(position, dtype=np.float64).reshape(3).copy()
        t = header_stamp if header_stamp else arrival
        if self._object_stamp is not None and np.isfinite(self.object_pos).all():
            dt = t - self._object_stamp
            if dt > 1e-6:
                self.object_vel = (p - self.object_pos) / dt
        self.object_pos, self._object_stamp, self.object_time = p, t, arrival

    def set_object_velocity(self, velocity: Sequence[float]) -> None:
        """Override the finite-difference velocity (a tracker that estimates it)."""
        self.object_vel = np.asarray(velocity, dtype=np.float64).reshape(3).copy()

    def set_last_action(self, action: Sequence[float] | None) -> None:
        """The action fed to the safety chain; stored clipped to [-1, 1] (NaN -> 0, as the sim)."""
        if action is None:
            self.last_action = None
            return
        a = np.asarray(action, dtype=np.float64).ravel()
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        size = getattr(self, "_last_action_size", len(a))
        if len(a) != size:
            raise ValueError(f"last action has {len(a)} values, the observation's last_action {size}")
        self.last_action = a

    # ------------------------------------------------------------------ outputs
    def missing(self) -> list[str]:
        """What has never been received but is needed before the first command (empty: ready)."""
        out = []
        idx = [self.index[j] for j in self.required]
        no_pos = [j for j, i in zip(self.required, idx) if self.q_time[i] == -np.inf]
        no_vel = [j for j, i in zip(self.required, idx) if self.dq_time[i] == -np.inf]
        if len(no_pos) == len(no_vel) == len(self.required):
            out.append(f"a JointState (positions and velocities of {len(self.required)} joints)")
        else:
            if no_pos:
                out.append(f"joint positions of {no_pos}")
            if no_vel:
                out.append(f"joint velocities of {no_vel}")
        if self.needs_imu and self.imu_time is None:
            out.append("an IMU message")
        return out

    @property
    def ready(self) -> bool:
        return not self.missing()

    def joint_state_time(self) -> float | None:
        """Arrival time of the oldest required joint reading (the watchdog's JointState stamp)."""
        idx = [self.index[j] for j in self.required]
        t = float(min(self.q_time[idx].min(), self.dq_time[idx].min()))
        return t if math.isfinite(t) else None

    def raw_terms(self) -> dict[str, np.ndarray]:
        """Each term's raw value (physical units, before offset/scale/clip)."""
        return {t.name: np.asarray(t.fn(), dtype=np.float64) for t in self.terms}

    def build(self) -> np.ndarray:
        """The observation vector (float64, `size`), exactly as the env computed it in training."""
        parts = []
        for t in self.terms:
            v = np.asarray(t.fn(), dtype=np.float64)
            if t.offset is not None:
                v = v - t.offset
            v = v * t.scale
            if t.clip is not None:
                v = np.clip(v, -t.clip, t.clip)
            parts.append(v)
        return np.concatenate(parts) if parts else np.zeros(0)

    def robot_state(self, command_time: float | None = None) -> RobotState:
        """The measured state for the safety chain: every spec joint (spec order), the IMU
        (orientation w, x, y, z; gyro; accelerometer), and the times set with each reading (the
        node passes measurement times on its clock). `command_time` defaults to the last
        cmd_vel / goal arrival."""
        quat = gyro = accel = None
        if self.imu_time is not None:
            x, y, z, w = self.imu_quat
            quat = np.array([w, x, y, z])
            gyro = self.imu_gyro.copy()
            accel = None if self.imu_accel is None else self.imu_accel.copy()
        if command_time is None:
            command_time = self.cmd_time if self.spec.ros.cmd_vel else self.goal_time
        return RobotState(position=self.q[self._spec_idx].copy(), velocity=self.dq[self._spec_idx].copy(),
                          orientation=quat, angular_velocity=gyro, linear_acceleration=accel,
                          joint_state_stamp=self.joint_state_time(), imu_stamp=self.imu_time,
                          command_stamp=command_time)
