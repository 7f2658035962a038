"""Observation terms, defined once for the training env and for the robot.

A policy observation is an ordered list of named terms. A deployable term names a
*source* (what feeds it on the real robot, e.g. ``imu.projected_gravity``); each source
declares the raw *readings* it needs (plain physical quantities, e.g. ``imu_quat_wxyz``)
and one function that computes the term from them. The training env takes the readings
from simulator tensors, ``(N, k)`` torch; the policy node takes them from robot messages,
``(1, k)`` numpy. Both then call the same `raw_value` and `finish`, so the two cannot
disagree: only how the readings are obtained differs.

    readings --source fn--> (minus the `relative_to` reading) -> (wrapped)        = raw value
    raw value -> minus offset ("default_pose") -> [+ noise, training only] -> times scale -> clip
                                                                                  = `finish`

Readings (every one a batch ``(N, k)``; frames as in the sim: world = robot base frame):

| reading | k | what |
|---|---|---|
| ``joint_pos``, ``joint_vel`` | joints | actuated joints, robot-spec order (rad, m; rad/s, m/s) |
| ``joint_pos[J]``, ``joint_vel[J]`` | 1 | one joint, by name |
| ``gripper_width`` | 1 | finger opening: the sum of the gripper joints' positions (m) |
| ``imu_quat_wxyz`` | 4 | IMU orientation (world <- IMU), unit, w, x, y, z (ROS' x, y, z, w is converted at the edge) |
| ``imu_gyro`` | 3 | angular velocity in the IMU frame (rad/s) |
| ``cmd_vel`` | 3 | commanded base velocity (vx, vy, yaw rate) |
| ``last_action`` | A | the last normalized action, in [-1, 1] |
| ``ee_pos`` | 3 | end-effector (TCP) position: `SiteKinematics` of the current joints (both sides) |
| ``goal_pos``, ``object_pos``, ``object_vel`` | 3 | goal position; tracked object position and linear velocity |

Term properties beyond the source, explicit (a deployment never infers them from a name):
``offset`` (None or "default_pose"), ``scale``, ``clip`` (symmetric, after scale), ``wrap``
(angle to (-pi, pi], as ``atan2(sin, cos)``), ``relative_to`` (a point subtracted from
the source's value, e.g. "end_effector": the object's position relative to the TCP) and
``history`` (H >= 1: the policy sees the term's last H finished values, one per control
step, newest first, H x k values; a new episode -- or a deployment's start -- fills all H
with the first value). `stack_history` is the one definition of that layout for both sides.

Terms with source ``"privileged"`` (simulator state no robot measures) are computed by a
task-provided function in the env and cannot be deployed.

The functions work on numpy arrays and torch tensors alike (no torch import here).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

PRIVILEGED = "privileged"
KNOWN_OFFSETS = (None, "default_pose")
RELATIVE_TO = {"end_effector": "ee_pos"}  # relative_to value -> the reading subtracted


class ObservationError(ValueError):
    """An observation term cannot be computed as declared (the message names the term)."""


# ----------------------------------------------------------------------------- array helpers
def _ns(x: Any):
    """The array namespace of `x`: torch for tensors, numpy otherwise."""
    if type(x).__module__.startswith("torch"):
        return sys.modules["torch"]
    return np


def _cat(parts: list) -> Any:
    return _ns(parts[0]).concatenate(parts, axis=-1)


def projected_gravity(q_wxyz: Any) -> Any:
    """Unit gravity (0, 0, -1) seen in the frame of orientation `q` (..., 4), w, x, y, z, unit
    norm: R(q)^T (0, 0, -1). Written as the expansion of the rotation the sim used, term by term."""
    w, x, y, z = q_wxyz[..., 0:1], q_wxyz[..., 1:2], q_wxyz[..., 2:3], q_wxyz[..., 3:4]
    return _cat([2.0 * (w * y - x * z), -2.0 * (w * x + y * z), 2.0 * (x * x + y * y) - 1.0])


def wrap_angle(a: Any) -> Any:
    """Angles to (-pi, pi], as ``atan2(sin a, cos a)`` (non-finite stays non-finite)."""
    ns = _ns(a)
    return ns.arctan2(ns.sin(a), ns.cos(a))


class SiteKinematics:
    """Forward kinematics of one site of a MuJoCo model: its world position as a function of the
    positions of the hinge/slide joints between the world and the site (`joints`, root first),
    for batches (N, len(joints)) of numpy or torch values. MuJoCo's `mj_kinematics` (joint values
    relative to ``qpos0``, hinges about their anchor), evaluated from the site back to the root
    on vectors, one small matrix product per joint.

    The ``ee_pos`` reading on both sides: the env evaluates it on the simulated joints, the
    robot's builder on the measured ones (a site sensor would lag the joints by a physics step).
    """

    def __init__(self, model: Any, site: str):
        import mujoco

        sid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if sid < 0:
            raise ObservationError(f"forward kinematics: no site {site!r} in the model")
        self.site = site
        path = []  # bodies from the site's body up to (not including) the world
        b = int(model.site_bodyid[sid])
        while b > 0:
            if model.body_mocapid[b] >= 0:
                raise ObservationError(f"forward kinematics of {site!r}: a mocap body is on its path")
            path.append(b)
            b = int(model.body_parentid[b])
        hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
        # The site's position is a chain of maps of a point v, applied from the site to the world:
        # a body's joints (last first; hinge: v -> Rot(axis, q - q0) (v - anchor) + anchor; slide:
        # v -> v + axis (q - q0)), then the body's placement in its parent, v -> R v + p.
        ops: list[tuple] = []
        joints: list[str] = []
        for b in path:
            jnts = range(int(model.body_jntadr[b]), int(model.body_jntadr[b] + model.body_jntnum[b]))
            for j in reversed(jnts):
                name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
                if int(model.jnt_type[j]) not in (hinge, slide):
                    raise ObservationError(f"forward kinematics of {site!r}: joint {name!r} on its path is not a "
                                           "hinge or slide joint")
                ops.append(("hinge" if int(model.jnt_type[j]) == hinge else "slide", name,
                            float(model.qpos0[model.jnt_qposadr[j]]), np.array(model.jnt_axis[j], dtype=np.float64),
                            np.array(model.jnt_pos[j], dtype=np.float64)))
                joints.insert(0, name)
            ops.append(("rigid", _quat_to_mat(model.body_quat[b]), np.array(model.body_pos[b], dtype=np.float64)))
        self.joints = joints
        self._q0 = np.array([op[2] for op in ops if op[0] != "rigid"][::-1], dtype=np.float64)
        # Compile: fold every rigid map into the joint map before it, and the maps before the first
        # joint into the starting point. Each joint then is one step (col: its column of q):
        #   hinge: v -> [v - o] @ A -> X (N, 9);  v = X[:, :3] + c X[:, 3:6] + s X[:, 6:9] + t
        #          (A = [R P | R (I - P) | R K]^T for P = axis axis^T, K = axis cross; t = R o + p)
        #   slide: v -> v @ A + (q - q0) b + t      (A = R^T, b = R axis, t = p)
        start = np.array(model.site_pos[sid], dtype=np.float64)
        steps: list[list] = []
        for op in ops:
            if op[0] == "rigid":
                rot, pos = op[1], op[2]
                if not steps:
                    start = rot @ start + pos
                    continue
                step = steps[-1]  # R (the step's map) + p: each 3x3 block of A maps on through R
                step[3] = (step[3].reshape(3, -1, 3) @ rot.T).reshape(3, -1)
                if step[0] == "slide":
                    step[4] = rot @ step[4]
                step[5] = rot @ step[5] + pos
                continue
            kind, name, q0, a, o = op
            col = joints.index(name)
            if kind == "hinge":
                p_ = np.outer(a, a)
                k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
                blocks = np.concatenate([p_.T, (np.eye(3) - p_).T, k.T], 1)  # v -> (P v, (I - P) v, K v)
                steps.append(["hinge", col, o if o.any() else None, blocks, None, o.copy()])
            else:
                steps.append(["slide", col, None, np.eye(3), a.copy(), np.zeros(3)])
        self._start = start
        self._steps = [tuple(st) for st in steps]
        self._tensors: dict = {}  # the constants as tensors, per (dtype, device)

    def _consts(self, like: Any) -> tuple:
        if isinstance(like, np.ndarray):
            return self._start, self._q0, self._steps
        key = (like.dtype, like.device)
        if key not in self._tensors:
            t = _ns(like)

            def conv(x: Any) -> Any:
                return t.as_tensor(x, dtype=like.dtype, device=like.device) if isinstance(x, np.ndarray) else x

            self._tensors[key] = (conv(self._start), conv(self._q0), [tuple(conv(x) for x in st) for st in self._steps])
        return self._tensors[key]

    def position(self, q: Any) -> Any:
        """World position (N, 3) of the site for joint positions `q` (N, len(joints))."""
        ns = _ns(q)
        start, q0, steps = self._consts(q)
        if not steps:  # nothing moves the site
            return np.tile(start, (len(q), 1)) if isinstance(q, np.ndarray) else start.expand(len(q), 3).clone()
        theta = q - q0
        c, s = ns.cos(theta), ns.sin(theta)
        v = start
        for kind, col, o, a, b, t in steps:
            if o is not None:
                v = v - o
            # v @ a written out elementwise: no BLAS call per joint (its thread pool can stall on a busy machine)
            x = v[..., 0:1] * a[0] + v[..., 1:2] * a[1] + v[..., 2:3] * a[2]
            if kind == "hinge":
                v = x[..., 0:3] + c[:, col:col + 1] * x[..., 3:6] + s[:, col:col + 1] * x[..., 6:9] + t
            else:
                v = x + theta[:, col:col + 1] * b + t
        return v


def _quat_to_mat(q: Any) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """A deployable source: the readings it needs and the function from them to the term."""

    name: str
    readings: tuple[str, ...]
    fn: Callable[..., Any]
    doc: str = ""


def _identity(x: Any) -> Any:
    return x


SOURCES: dict[str, Source] = {}
_SINGLE_JOINT = re.compile(r"^joint_states\.(position|velocity)\[([^\]]+)\]$")
_SINGLE_READING = re.compile(r"^joint_(pos|vel)\[([^\]]+)\]$")
_RESOLVED: dict[str, Source] = {}


def register_source(name: str, readings: tuple[str, ...], fn: Callable[..., Any] = _identity, doc: str = "") -> Source:
    """Add a deployable source (a task package may add its own; both sides then know it)."""
    if name in SOURCES or name == PRIVILEGED:
        raise ValueError(f"observation source {name!r} is already defined")
    SOURCES[name] = Source(name, tuple(readings), fn, doc)
    return SOURCES[name]


register_source("joint_states.position", ("joint_pos",), doc="actuated joint positions, spec order")
register_source("joint_states.velocity", ("joint_vel",), doc="actuated joint velocities, spec order")
register_source("joint_states.position[gripper]", ("gripper_width",), doc="finger opening (m)")
register_source("imu.angular_velocity", ("imu_gyro",), doc="IMU gyro, IMU frame")
register_source("imu.projected_gravity", ("imu_quat_wxyz",), projected_gravity, doc="gravity direction, IMU frame")
register_source("cmd_vel", ("cmd_vel",), doc="velocity command (vx, vy, yaw rate)")
register_source("policy.last_action", ("last_action",), doc="the last normalized action")
register_source("forward_kinematics.end_effector", ("ee_pos",), doc="end-effector position")
register_source("goal_pose.position", ("goal_pos",), doc="goal position")
register_source("object_pose.position", ("object_pos",), doc="tracked object position")
register_source("object_pose.velocity", ("object_vel",), doc="tracked object linear velocity")


def source(name: str) -> Source:
    """The source called `name`: a registered one, or ``joint_states.position[J]`` /
    ``joint_states.velocity[J]`` for one joint J (reading ``joint_pos[J]`` / ``joint_vel[J]``)."""
    found = SOURCES.get(name) or _RESOLVED.get(name)
    if found is not None:
        return found
    m = _SINGLE_JOINT.match(name)
    if m is None:
        raise KeyError(name)
    field, joint = m.groups()
    reading = f"joint_{'pos' if field == 'position' else 'vel'}[{joint}]"
    found = _RESOLVED[name] = Source(name, (reading,), _identity, f"joint {joint} {field}")
    return found


def single_joint(reading: str) -> tuple[str, str] | None:
    """("pos" | "vel", joint name) for a ``joint_pos[J]`` / ``joint_vel[J]`` reading, else None."""
    m = _SINGLE_READING.match(reading)
    return (m.group(1), m.group(2)) if m else None


# ----------------------------------------------------------------------------- terms
@dataclass(frozen=True)
class Term:
    """One observation term as declared by a task and recorded in a bundle manifest."""

    name: str
    source: str
    scale: float = 1.0
    clip: float | None = None
    offset: str | None = None  # "default_pose": the robot's default joint pose is subtracted
    wrap: bool = False  # wrap the raw value to (-pi, pi]
    relative_to: str | None = None  # "end_effector": the TCP position is subtracted from the raw value
    history: int = 1  # the last H finished values, newest first (H x k values)

    def __post_init__(self) -> None:
        where = f"observation term {self.name!r}"
        if isinstance(self.history, (bool, np.bool_)) or not isinstance(self.history, (int, np.integer)) \
                or self.history < 1:
            raise ObservationError(f"{where}: history must be a whole number >= 1, not {self.history!r}")
        if self.offset not in KNOWN_OFFSETS:
            raise ObservationError(f"{where}: unknown offset {self.offset!r} (known: default_pose)")
        if self.relative_to is not None and self.relative_to not in RELATIVE_TO:
            raise ObservationError(f"{where}: unknown relative_to {self.relative_to!r} "
                                   f"(known: {', '.join(RELATIVE_TO)})")
        if not isinstance(self.wrap, (bool, np.bool_)):
            raise ObservationError(f"{where}: wrap must be true or false, not {self.wrap!r}")
        if self.clip is not None and not self.clip > 0:
            raise ObservationError(f"{where}: clip must be positive, not {self.clip!r}")
        if self.source != PRIVILEGED:
            try:
                source(self.source)
            except KeyError:
                raise ObservationError(f"{where}: source {self.source!r} is not a known observation source "
                                       f"(known: {', '.join(SOURCES)}, joint_states.position[J], "
                                       f"joint_states.velocity[J], {PRIVILEGED})") from None
        elif self.wrap or self.relative_to is not None:
            raise ObservationError(f"{where}: wrap / relative_to apply to deployable sources, not {PRIVILEGED}")

    @property
    def deployable(self) -> bool:
        return self.source != PRIVILEGED

    @property
    def readings(self) -> tuple[str, ...]:
        """The readings the term is computed from (none for a privileged term)."""
        if not self.deployable:
            return ()
        extra = (RELATIVE_TO[self.relative_to],) if self.relative_to is not None else ()
        return source(self.source).readings + extra

    def properties(self) -> dict:
        """The term's properties as plain values (what a layout and a bundle manifest record)."""
        return {"source": self.source, "scale": self.scale, "clip": self.clip, "offset": self.offset,
                "wrap": bool(self.wrap), "relative_to": self.relative_to, "history": int(self.history)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], **extra: Any) -> "Term":
        """A term from a layout / manifest entry (`extra`: a subclass's own fields); ``wrap``,
        ``relative_to`` and ``history`` default to false / none / 1 (manifests written before
        they existed)."""
        clip, wrap, history = d.get("clip"), d.get("wrap", False), d.get("history", 1)
        return cls(name=str(d["name"]), source=str(d["source"]), scale=float(d.get("scale", 1.0)),
                   clip=None if clip is None else float(clip), offset=d.get("offset"),
                   wrap=False if wrap is None else wrap, relative_to=d.get("relative_to"),
                   history=1 if history is None else history, **extra)


class Readings(dict):
    """The readings of one observation pass, each fetched once, when first used: `getters`
    maps a reading's name to a function returning its current (N, k) value."""

    __slots__ = ("getters",)

    def __init__(self, getters: Mapping[str, Callable[[], Any]]):
        super().__init__()
        self.getters = getters

    def __missing__(self, name: str) -> Any:
        value = self[name] = self.getters[name]()
        return value


def raw_value(term: Term, readings: Mapping[str, Any]) -> Any:
    """The term's value in physical units, (N, k), from `readings` (name -> (N, ·) array;
    a mapping that fetches lazily works: each name is looked up once per use)."""
    src = source(term.source)
    if len(src.readings) == 1:
        value = src.fn(readings[src.readings[0]])
    else:
        value = src.fn(*[readings[r] for r in src.readings])
    if term.relative_to is not None:
        value = value - readings[RELATIVE_TO[term.relative_to]]
    if term.wrap:
        value = wrap_angle(value)
    return value


def finish(value: Any, term: Term, default_pose: Any = None, noise: Any = None) -> Any:
    """Raw value -> what the policy sees: minus the offset, plus `noise` (the training env's
    observation noise; a deployment passes none), times scale, clipped."""
    if term.offset == "default_pose":
        if default_pose is None:
            raise ObservationError(f"observation term {term.name!r}: offset default_pose needs the default pose")
        value = value - default_pose
    if noise is not None:
        value = value + noise
    if term.scale != 1.0:
        value = value * term.scale
    if term.clip is not None:
        value = value.clip(-term.clip, term.clip)
    return value


def stack_history(buffer: Any, frame: Any, fill: Any = None) -> Any:
    """One control step of a term's history: `buffer` (N, H, k), newest first, gets `frame`
    (N, k) in front (the oldest drops out), in place; rows where `fill` (N,) bool is true
    (new episodes) are filled with `frame` in all H places instead. Returns the (N, H x k)
    values the policy sees: frame t, t-1, ..., t-H+1, each k wide."""
    if buffer.shape[1] > 1:
        buffer[:, 1:] = buffer[:, :-1].copy() if isinstance(buffer, np.ndarray) else buffer[:, :-1].clone()
    buffer[:, 0] = frame
    if fill is not None:
        return fill_history(buffer, frame, fill)
    return buffer.reshape(buffer.shape[0], -1)


def fill_history(buffer: Any, frame: Any, rows: Any) -> Any:
    """Fill the `rows` (N,) bool of `buffer` (N, H, k) with `frame` (N, k) in all H places (a
    new episode: nothing came before its first value), in place; the other rows are kept.
    Returns the (N, H x k) values the policy sees."""
    buffer[rows] = frame[rows][:, None, :]
    return buffer.reshape(buffer.shape[0], -1)
