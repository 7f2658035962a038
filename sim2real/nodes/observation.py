"""The policy's observation, rebuilt from what a real robot publishes (no ROS import).

`ObservationBuilder` reads a bundle manifest's ``observation.terms`` and computes each term
with the same code the simulated env used in training (`roboreal.control.observation`:
the source's function, ``relative_to``, ``wrap``, then `finish`: offset, scale, clip). What
differs is only where the raw *readings* come from: here, the robot's messages.

The node hands it plain values taken from ROS messages (names, arrays, quaternions in ROS
order x, y, z, w); tests hand it the same from a simulated state. How each reading is
obtained on the robot:

| reading | from |
|---|---|
| ``joint_pos`` / ``joint_vel`` | the manifest's joints (actuated, spec order), BY NAME from JointState |
| ``joint_pos[J]`` / ``joint_vel[J]`` | one joint of JointState, by name |
| ``gripper_width`` | sum of the gripper joints' positions in JointState (the finger opening, m) |
| ``imu_quat_wxyz`` | Imu orientation, ROS x, y, z, w -> w, x, y, z, normalized (NaN for a zero/non-finite one) |
| ``imu_gyro`` | Imu angular_velocity (IMU frame = base frame, as the sim's gyro site) |
| ``cmd_vel`` | Twist (linear.x, linear.y, angular.z); zeros until one arrives |
| ``last_action`` | set by the node (`set_last_action`, see its ``last_action_source``), clipped to [-1, 1] |
| ``ee_pos`` | MuJoCo FK of the measured joints on the robot's MJCF, ``sites.end_effector`` |
| ``goal_pos`` | PoseStamped position (robot base frame = the sim's world frame) |
| ``object_pos`` | PoseStamped position of the tracked object |
| ``object_vel`` | finite difference of successive object poses (by header stamp), or a tracker's estimate |

Term properties come from the manifest: ``offset``, ``scale``, ``clip``, ``wrap``,
``relative_to`` and ``history`` (false / none / 1 where a manifest lacks them). A term with
a history H is the last H values `build` computed, newest first, as the env stacked them in
training; `restart_history` (the controller's start and reset) refills all H with the next.
A manifest written before ``wrap`` / ``relative_to`` existed, with a term the old builder
wrapped (an unlimited hinge) or made relative by its name (``*_rel_pos``), is refused with
the fix in the message, rather than read differently than the policy was trained.

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

from roboreal.control.observation import (
    SOURCES,
    ObservationError,
    Readings,
    SiteKinematics,
    Term,
    finish,
    raw_value,
    single_joint,
    stack_history,
)
from roboreal.robots.spec import RobotSpec
from roboreal.sim2real.safety.types import RobotState


def quat_wxyz_from_ros(q_xyzw: Sequence[float]) -> np.ndarray:
    """A ROS quaternion (x, y, z, w) as the ``imu_quat_wxyz`` reading: w, x, y, z, normalized
    (some drivers publish a non-unit one); NaN for a zero or non-finite quaternion."""
    x, y, z, w = (float(v) for v in q_xyzw)
    n = math.sqrt(x * x + y * y + z * z + w * w) if all(map(math.isfinite, (x, y, z, w))) else math.nan
    if not (n > 0 and math.isfinite(n)):
        return np.full(4, np.nan)
    return np.array([w / n, x / n, y / n, z / n])


def applied_action(mapping, values: np.ndarray, previous: np.ndarray | None, action: np.ndarray) -> np.ndarray:
    """The safety chain's output (targets/forces of `mapping.joints`) mapped back to the
    normalized action that would have produced it (`ActionMapping.to_action`, clipped to
    [-1, 1]); dims beyond the mapping (a gripper) are kept from `action`. Delta mappings need
    the previous output; without one (the first command) the applied delta is 0."""
    values = np.asarray(values, dtype=np.float64)
    out = np.array(action, dtype=np.float64)
    out[:mapping.size] = mapping.to_action(values, values if previous is None else previous)
    return out


@dataclass(frozen=True)
class _Term(Term):
    """A manifest term (`roboreal.control.observation.Term`) with the size the manifest gives it
    (``history`` x `frame_size`)."""

    size: int = 0

    @property
    def frame_size(self) -> int:
        """Values per control step (the manifest's size over the history length)."""
        return self.size // self.history


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

        self.needs_imu = spec.reads_imu
        self.needs_goal = self.needs_object = False
        self._fk = None
        self._readers: dict[str, Callable[[], np.ndarray]] = {}  # reading -> its current (1, k) value
        self.terms: list[_Term] = [self._make_term(t) for t in manifest["observation"]["terms"]]
        self.size = sum(t.size for t in self.terms)
        # the last H values of each term with a history (newest first); refilled on the next build
        # after `restart_history` (the start, a reset), as a new episode does in training
        self._history = {t.name: np.zeros((1, t.history, t.frame_size)) for t in self.terms if t.history > 1}
        self._history_restart = True
        if self.size != int(manifest["observation"]["size"]):
            raise ObservationError(f"observation terms add up to {self.size}, the manifest says "
                                   f"{manifest['observation']['size']}")

    # ------------------------------------------------------------------ terms
    def _make_term(self, t: dict) -> _Term:
        name, size = str(t["name"]), int(t["size"])
        legacy = self._legacy_reading(t)
        if legacy:
            raise ObservationError(f"observation term {name!r}: the manifest predates explicit wrap/relative_to, and "
                                   f"builders before them read this term with `{legacy}`; re-export the bundle "
                                   f"(roboreal export) or add `{legacy}` to the term")
        term = _Term.from_dict(t, size=size)  # unknown source / offset / relative_to: ObservationError naming it
        if size % term.history:
            raise ObservationError(f"observation term {name!r}: size {size} is not a whole number of its "
                                   f"{term.history} history steps")
        size = term.frame_size
        if not term.deployable:
            raise ObservationError(f"observation term {name!r}: source {term.source!r} cannot be built from robot "
                                   "messages")
        if term.offset == "default_pose" and size != len(self.default_pose):
            raise ObservationError(f"observation term {name!r}: offset default_pose has {len(self.default_pose)} "
                                   f"values, the term {size}")
        for reading in term.readings:
            self._add_reader(reading, term)
        got = raw_value(term, Readings(self._readers)).shape
        if got != (1, size):
            raise ObservationError(f"observation term {name!r} ({term.source}) gives {got[-1] if got else 0} values "
                                   f"on robot {self.spec.name}, the manifest says {size}")
        return term

    def _legacy_reading(self, t: dict) -> str | None:
        """What a builder before explicit ``wrap`` / ``relative_to`` did with this term that the
        defaults would not (None: nothing)."""
        name, src = str(t.get("name")), str(t.get("source"))
        if "relative_to" not in t and src == "object_pose.position" and name.endswith("_rel_pos"):
            return "relative_to: end_effector"
        m = re.match(r"^joint_states\.position\[([^\]]+)\]$", src)
        joint = m.group(1) if (m and src not in SOURCES) else None  # one joint's position (not [gripper])
        if "wrap" not in t and joint in self.index and self._is_continuous_hinge(joint):
            return "wrap: true"
        return None

    def _add_reader(self, reading: str, term: _Term) -> None:
        """Register how `reading` is taken from the robot's messages (and what it needs)."""
        spec = self.spec
        if reading in self._readers:
            return
        if reading == "joint_pos":
            fn = lambda: self.q[None, self._act_idx]  # noqa: E731
        elif reading == "joint_vel":
            fn = lambda: self.dq[None, self._act_idx]  # noqa: E731
        elif single_joint(reading):
            field, joint = single_joint(reading)
            if joint not in self.index:
                raise ObservationError(f"observation term {term.name!r}: {joint!r} is not a joint of robot "
                                       f"{spec.name} ({self.tracked})")
            i = self.index[joint]
            fn = (lambda: self.q[None, i:i + 1]) if field == "pos" else (lambda: self.dq[None, i:i + 1])
        elif reading == "gripper_width":
            if spec.gripper is None:
                raise ObservationError(f"observation term {term.name!r} needs a gripper; robot {spec.name} has none")
            idx = np.array([self.index[g] for g in spec.gripper.joints], dtype=int)
            self.required += [g for g in spec.gripper.joints if g not in self.required]
            fn = lambda: self.q[idx].sum(keepdims=True)[None]  # noqa: E731
        elif reading == "imu_quat_wxyz":
            self.needs_imu = True
            fn = lambda: quat_wxyz_from_ros(self.imu_quat)[None]  # noqa: E731
        elif reading == "imu_gyro":
            self.needs_imu = True
            fn = lambda: self.imu_gyro[None]  # noqa: E731
        elif reading == "cmd_vel":
            fn = lambda: self.cmd_vel[None]  # noqa: E731
        elif reading == "last_action":
            size = self._last_action_size = term.frame_size
            fn = lambda: np.zeros((1, size)) if self.last_action is None else self.last_action[None]  # noqa: E731
        elif reading == "ee_pos":
            fk = self._forward_kinematics()
            fn = lambda: fk(self.q)  # noqa: E731
        elif reading == "goal_pos":
            self.needs_goal = True
            fn = lambda: self.goal[None]  # noqa: E731
        elif reading == "object_pos":
            self.needs_object = True
            fn = lambda: self.object_pos[None]  # noqa: E731
        elif reading == "object_vel":
            self.needs_object = True
            fn = lambda: self.object_vel[None]  # noqa: E731
        else:
            raise ObservationError(f"observation term {term.name!r}: source {term.source!r} needs the reading "
                                   f"{reading!r}, which this builder cannot take from robot messages")
        self._readers[reading] = fn

    def _is_continuous_hinge(self, joint: str) -> bool:
        import mujoco

        model = self._model()
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
        hinge = int(mujoco.mjtJoint.mjJNT_HINGE)
        return bool(jid >= 0 and int(model.jnt_type[jid]) == hinge and not model.jnt_limited[jid])

    def _model(self):
        if not hasattr(self, "_mj_model"):
            from roboreal.robots.model import build_model

            self._mj_model = build_model(self.spec)
        return self._mj_model

    def _forward_kinematics(self) -> Callable[[np.ndarray], np.ndarray]:
        """The end-effector site's position (1, 3) from measured joint positions (tracked order):
        the shared `SiteKinematics` the env evaluates on the simulated joints, on the robot's MJCF."""
        if self._fk is None:
            site = self.spec.sites.end_effector
            if site is None:
                raise ObservationError(f"forward_kinematics.end_effector: robot {self.spec.name} has no "
                                       "sites.end_effector")
            chain = SiteKinematics(self._model(), site)
            unmeasured = [j for j in chain.joints if j not in self.index]
            if unmeasured:
                raise ObservationError(f"forward_kinematics.end_effector: joints {unmeasured} move {site!r} but are "
                                       f"not joints of robot {self.spec.name}")
            idx = np.array([self.index[j] for j in chain.joints], dtype=int)
            self._fk = lambda q: chain.position(q[None, idx])
        return self._fk

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

    @property
    def command_inputs(self) -> tuple[str, ...]:
        """The commands this policy reads (its manifest's observation terms, which its
        ``inputs`` section mirrors): "cmd_vel" and/or "goal". Not the robot's declared topics
        (`RobotSpec.command_inputs`): a policy that sees its goal in its images reads none."""
        return tuple(name for name, reading in (("cmd_vel", "cmd_vel"), ("goal", "goal_pos"))
                     if reading in self._readers)

    def joint_state_time(self) -> float | None:
        """Arrival time of the oldest required joint reading (the watchdog's JointState stamp)."""
        idx = [self.index[j] for j in self.required]
        t = float(min(self.q_time[idx].min(), self.dq_time[idx].min()))
        return t if math.isfinite(t) else None

    def watched_reading_time(self) -> float | None:
        """Measurement time of the oldest reading the watchdog ages on the sensor timeouts: the
        joints and, where the policy needs it, the IMU (None until each has arrived)."""
        joints = self.joint_state_time()
        if not self.needs_imu:
            return joints
        return None if joints is None or self.imu_time is None else min(joints, self.imu_time)

    def readings(self) -> dict[str, np.ndarray]:
        """The current value of every reading the terms use, (1, k) each (for diagnostics)."""
        return {name: np.array(fn(), dtype=np.float64) for name, fn in self._readers.items()}

    def raw_terms(self) -> dict[str, np.ndarray]:
        """Each term's raw value (physical units, before offset/scale/clip), (size,)."""
        readings = Readings(self._readers)
        return {t.name: np.array(raw_value(t, readings)[0], dtype=np.float64) for t in self.terms}

    def term_values(self) -> dict[str, np.ndarray]:
        """Each term as the policy sees it (after offset, scale, clip), its newest value for a
        term with a history (frame size,): what the training env's `observation_terms()`
        gives for the same state."""
        readings = Readings(self._readers)
        return {t.name: np.array(finish(raw_value(t, readings), t, self.default_pose)[0], dtype=np.float64)
                for t in self.terms}

    def build(self) -> np.ndarray:
        """The observation vector (float64, `size`), exactly as the env computed it in training.
        One call is one control step: each history term's values move on by one."""
        readings = Readings(self._readers)
        restart = np.array([self._history_restart])
        parts = []
        for t in self.terms:
            value = finish(raw_value(t, readings), t, self.default_pose)
            if t.history > 1:
                value = stack_history(self._history[t.name], value, fill=restart)
            parts.append(value[0])
        self._history_restart = False
        return np.concatenate(parts).astype(np.float64, copy=False) if parts else np.zeros(0)

    def restart_history(self) -> None:
        """The next `build` fills every history term with its value then (the policy starts
        afresh, as in a new training episode): on start and after a reset."""
        self._history_restart = True

    def robot_state(self, command_time: float | None = None) -> RobotState:
        """The measured state for the safety chain: every spec joint (spec order), the IMU
        (orientation w, x, y, z; gyro; accelerometer), and the times set with each reading (the
        node passes measurement times on its clock). `command_time` defaults to the oldest
        last arrival of the commands the policy reads (`command_inputs`; None when one never
        came, or when it reads none: the controller decides what a command-free policy's
        stamp is)."""
        quat = gyro = accel = None
        if self.imu_time is not None:
            x, y, z, w = self.imu_quat
            quat = np.array([w, x, y, z])
            gyro = self.imu_gyro.copy()
            accel = None if self.imu_accel is None else self.imu_accel.copy()
        if command_time is None:
            times = [{"cmd_vel": self.cmd_time, "goal": self.goal_time}[c] for c in self.command_inputs]
            command_time = None if not times or None in times else min(times)
        return RobotState(position=self.q[self._spec_idx].copy(), velocity=self.dq[self._spec_idx].copy(),
                          orientation=quat, angular_velocity=gyro, linear_acceleration=accel,
                          joint_state_stamp=self.joint_state_time(), imu_stamp=self.imu_time,
                          command_stamp=command_time)
