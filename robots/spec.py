"""Robot spec (`robot.yaml`): the single source of truth for joints, gains and limits.
(Over 400 lines: the spec's dataclasses, their validation and the robot lookup are read together.)

Training, export and deployment all read it. `load_robot(name)` parses and validates
the YAML against the MJCF model next to it; any inconsistency (unknown joint, missing
field, default pose outside limits, safety limits looser than the hardware limits) is
refused with a `ConfigError` naming the field. The simulated actuators take their gains
and ranges from the spec too: `roboreal.robots.model.build_model(spec)` writes them into
the MJCF before compiling (and `load_robot_file` refuses values the model cannot take).
The ``safety:`` section is declared once, in `SafetySpec` (`roboreal.robots.safety_spec`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from roboreal.config import ConfigError, from_dict, load_yaml
from roboreal.robots.cameras import CameraSpec
from roboreal.robots.safety_spec import SafetySpec, finite_number, validate_safety

ROBOTS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class JointSpec:
    name: str
    position_limits: tuple[float, float]  # rad (or m for prismatic joints)
    velocity_limit: float  # rad/s
    torque_limit: float  # Nm (or N); the actuator's force range
    default: float = 0.0  # default pose
    kp: float | None = None  # PD gains for position-controlled joints
    kd: float | None = None
    actuated: bool = True
    actuator: str | None = None  # MJCF actuator name; defaults to the joint name


@dataclass(frozen=True)
class SitesSpec:
    """Where things are on the model, by MJCF name. What a task needs and the model lacks is
    added at load (`roboreal.robots.model.build_model`), so a third-party MJCF needs no edits:

    - ``imu``: a site (or a body: a site is added at its origin); the IMU's orientation,
      gyro and accelerometer sensors are added there unless the model has them.
    - ``end_effector``: the tool centre point, a site (or a body: a site at its origin).
    - ``feet``: one per foot, a site, a geom or a body (a site is added around the geom, or
      around the body's first geom); a touch sensor is added on each unless there is one.
    - ``base_body``: the body that carries the robot (a legged robot's floating trunk, an
      arm's base link). Arms without it use the parent body of the first joint.
    - ``floor``: the ground geom; unset: the model's plane named ``floor``, else its first
      plane; a quadruped model without one gets a plane named ``floor``.
    """

    imu: str | None = None
    end_effector: str | None = None
    feet: tuple[str, ...] = ()
    base_body: str | None = None
    floor: str | None = None


@dataclass(frozen=True)
class RosSpec:
    joint_states: str = "/joint_states"
    joint_commands: str = "/forward_position_controller/commands"
    # forward_command: Float64MultiArray of positions (efforts for force control); the
    #   driver applies its own fixed gains, which must be the kp/kd above.
    # position_gains: Float64MultiArray [positions, kp, kd] (3 x N, labelled layout), for
    #   drivers that take per-joint gains with each command (Unitree-style motor commands).
    # joint_trajectory: trajectory_msgs/JointTrajectory with one point (fixed gains).
    command_interface: Literal["forward_command", "position_gains", "joint_trajectory"] = "forward_command"
    imu: str | None = None
    cmd_vel: str | None = None
    goal: str | None = None
    gripper_commands: str | None = None
    object_pose: str | None = None  # an object tracker's geometry_msgs/PoseStamped (pick tasks)


@dataclass(frozen=True)
class GripperSpec:
    joints: tuple[str, ...]
    open: float
    closed: float
    force_limit: float


@dataclass(frozen=True)
class RobotSpec:
    name: str
    kind: Literal["quadruped", "manipulator", "cartpole"]
    model: str  # MJCF file, relative to the robot folder
    control_mode: Literal["position", "force"]
    joints: tuple[JointSpec, ...]
    safety: SafetySpec = field(default_factory=SafetySpec)
    sites: SitesSpec = field(default_factory=SitesSpec)
    ros: RosSpec = field(default_factory=RosSpec)
    gripper: GripperSpec | None = None
    # cameras on the robot (a wrist camera) or in its cell; added to the model when the MJCF lacks them
    cameras: tuple[CameraSpec, ...] = ()
    description: str = ""
    # s, the simulation step of this robot, written into the model; None: the MJCF's own
    # <option timestep>. Tasks set their own (`TaskCfg.physics_dt`), never the MJCF's.
    physics_dt: float | None = None
    # gravcomp on every body of the robot's chain (arms whose controller cancels gravity, as
    # real arm controllers do); False: as the MJCF has it.
    gravity_compensation: bool = False
    # Filled by the loader, not the YAML.
    directory: str = ""
    checksum: str = ""

    # ----- convenient arrays (in joint order) -----
    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def actuated_joints(self) -> list[JointSpec]:
        return [j for j in self.joints if j.actuated]

    @property
    def actuated_names(self) -> list[str]:
        return [j.name for j in self.actuated_joints]

    def array(self, attr: str, actuated_only: bool = True) -> np.ndarray:
        joints = self.actuated_joints if actuated_only else self.joints
        return np.array([getattr(j, attr) for j in joints], dtype=np.float64)

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.position_limits[0] for j in self.actuated_joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.position_limits[1] for j in self.actuated_joints])

    @property
    def model_path(self) -> Path:
        return Path(self.directory) / self.model

    # ----- what the robot does, derived from what robot.yaml declares (nodes and the safety
    # chain ask these, never `kind`, so a new kind of robot needs no node edits) -----
    @property
    def reads_imu(self) -> bool:
        """An IMU topic is declared (``ros.imu``): the policy node waits for its readings."""
        return self.ros.imu is not None

    @property
    def stands_without_command(self) -> bool:
        """Feet are declared (``sites.feet``): on a stale command the robot stands in its default
        pose, as a gait frozen at its last target is no stance; other robots hold that target."""
        return bool(self.sites.feet)

    @property
    def has_end_effector(self) -> bool:
        """An end-effector site is declared (``sites.end_effector``): the sim bridge publishes its pose."""
        return self.sites.end_effector is not None

    @property
    def command_inputs(self) -> tuple[str, ...]:
        """The commands the robot takes besides its own state, from the ROS topics declared:
        "cmd_vel" (``ros.cmd_vel``, a velocity to follow) and/or "goal" (``ros.goal``, a goal
        position to reach). Empty: nothing to command (no command watchdog)."""
        return tuple(name for name, topic in (("cmd_vel", self.ros.cmd_vel), ("goal", self.ros.goal))
                     if topic is not None)


def _check_finite(path: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ConfigError(path, f"must be finite, got {value}")


def validate(spec: RobotSpec, model=None, source: str | None = None) -> None:
    """Check internal consistency, and against the MJCF `model` when given."""

    def err(field_path: str, msg: str) -> ConfigError:
        return ConfigError(field_path, msg, source)

    if not spec.joints:
        raise err("joints", "at least one joint is required")
    seen = set()
    for i, j in enumerate(spec.joints):
        p = f"joints[{i}]"
        if j.name in seen:
            raise err(f"{p}.name", f"duplicate joint {j.name!r}")
        seen.add(j.name)
        lo, hi = j.position_limits
        for k, v in (("position_limits", lo), ("position_limits", hi), ("velocity_limit", j.velocity_limit),
                     ("torque_limit", j.torque_limit), ("default", j.default)):
            try:
                _check_finite(f"{p}.{k}", v)
            except ConfigError as e:
                raise err(e.field, str(e).split(": ", 1)[1]) from None
        if not lo < hi:
            raise err(f"{p}.position_limits", f"lower {lo} must be below upper {hi}")
        if not lo <= j.default <= hi:
            raise err(f"{p}.default", f"{j.default} is outside position_limits [{lo}, {hi}]")
        if j.velocity_limit <= 0:
            raise err(f"{p}.velocity_limit", f"must be positive, got {j.velocity_limit}")
        if j.torque_limit <= 0:
            raise err(f"{p}.torque_limit", f"must be positive, got {j.torque_limit}")
        if j.actuated and spec.control_mode == "position":
            for gain in ("kp", "kd"):
                v = getattr(j, gain)
                if v is None:
                    raise err(f"{p}.{gain}", "missing: position-controlled joints need PD gains")
                if not (math.isfinite(v) and v >= 0):
                    raise err(f"{p}.{gain}", f"must be a finite non-negative number, got {v}")
    s = spec.safety
    validate_safety(s, source)  # each value on its own
    for i, j in enumerate(spec.actuated_joints):
        lo, hi = j.position_limits
        if hi - lo <= 2 * s.joint_position_margin:
            raise err("safety.joint_position_margin", f"leaves no range for joint {j.name!r}")
    if spec.kind == "quadruped":
        if s.tilt_limit is None:
            raise err("safety.tilt_limit", "missing: quadrupeds need a tilt limit")
        if spec.sites.imu is None:
            raise err("sites.imu", "missing: quadrupeds need an IMU site")
        if spec.ros.imu is None:
            raise err("ros.imu", "missing: quadrupeds need an IMU topic")
        if s.watchdog.imu is None:
            raise err("safety.watchdog.imu", "missing: quadrupeds need an IMU timeout")
    if spec.kind == "manipulator" and spec.sites.end_effector is None:
        raise err("sites.end_effector", "missing: manipulators need an end-effector site")
    g = spec.gripper
    if g is not None:
        for k in ("open", "closed", "force_limit"):
            finite_number(f"gripper.{k}", getattr(g, k), source)
        if g.open == g.closed:
            raise err("gripper.closed", f"must differ from gripper.open ({g.open})")
        if g.force_limit <= 0:
            raise err("gripper.force_limit", f"must be positive, got {g.force_limit}")
    if spec.physics_dt is not None and not (finite_number("physics_dt", spec.physics_dt, source) > 0):
        raise err("physics_dt", f"must be positive, got {spec.physics_dt}")
    if len(set(spec.sites.feet)) != len(spec.sites.feet):
        raise err("sites.feet", f"names a foot twice: {list(spec.sites.feet)}")
    if spec.ros.command_interface in ("position_gains", "joint_trajectory") and spec.control_mode != "position":
        raise err("ros.command_interface", f"{spec.ros.command_interface} needs a position-controlled robot; "
                  f"{spec.name} is {spec.control_mode}-controlled")

    if model is None:
        return
    import mujoco

    def name_of(obj, id_) -> str:
        return mujoco.mj_id2name(model, obj, id_)

    model_joints = [name_of(mujoco.mjtObj.mjOBJ_JOINT, i) for i in range(model.njnt)]
    model_acts = [name_of(mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(model.nu)]
    for i, j in enumerate(spec.joints):
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        if jid < 0:
            raise err(f"joints[{i}].name", f"{j.name!r} is not a joint of {spec.model} (joints: {model_joints})")
        if j.actuated:
            act = j.actuator or j.name
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, act) < 0:
                raise err(f"joints[{i}].actuator", f"{act!r} is not an actuator of {spec.model} (actuators: {model_acts})")
        if model.jnt_limited[jid]:
            mlo, mhi = model.jnt_range[jid]
            lo, hi = j.position_limits
            if lo < mlo - 1e-6 or hi > mhi + 1e-6:
                raise err(f"joints[{i}].position_limits",
                          f"[{lo}, {hi}] is wider than the model's range [{mlo:.4f}, {mhi:.4f}]")
    obj = mujoco.mjtObj
    kinds = {"site": obj.mjOBJ_SITE, "geom": obj.mjOBJ_GEOM, "body": obj.mjOBJ_BODY}
    named = [("sites.imu", spec.sites.imu, ("site", "body")),
             ("sites.end_effector", spec.sites.end_effector, ("site", "body")),
             ("sites.base_body", spec.sites.base_body, ("body",)), ("sites.floor", spec.sites.floor, ("geom",))]
    named += [(f"sites.feet[{i}]", f, ("site", "geom", "body")) for i, f in enumerate(spec.sites.feet)]
    for fpath, name, allowed in named:
        if name is not None and all(mujoco.mj_name2id(model, kinds[k], name) < 0 for k in allowed):
            raise err(fpath, f"{name!r} is not a {' or '.join(allowed)} of {spec.model}")
    if spec.gripper is not None:
        for i, g in enumerate(spec.gripper.joints):
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, g) < 0:
                raise err(f"gripper.joints[{i}]", f"{g!r} is not a joint of {spec.model}")


def spec_checksum(robot_dir: Path, spec_file: Path, model_file: Path | None = None) -> str:
    """sha256 over robot.yaml and the MJCF files it uses (those next to it and the model,
    wherever it lies): any edit changes it."""
    h = hashlib.sha256()
    files = [spec_file, *sorted(robot_dir.glob("*.xml"))]
    if model_file is not None and model_file.exists() and model_file.resolve() not in {f.resolve() for f in files}:
        files.append(model_file)
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def load_robot_file(spec_file: str | Path, check_model: bool = True) -> RobotSpec:
    """Load and validate a robot.yaml (and its MJCF model). Names are checked against the
    MJCF as written; then `roboreal.robots.model.build_model` writes robot.yaml's gains and
    ranges into it, so a robot.yaml whose values its actuators cannot take is refused here."""
    spec_file = Path(spec_file).resolve()
    data = load_yaml(spec_file)
    source = str(spec_file)
    spec = from_dict(RobotSpec, data, source=source)
    if "directory" in (data or {}) or "checksum" in (data or {}):
        raise ConfigError("directory" if "directory" in data else "checksum", "is set by the loader, not the YAML", source)
    object.__setattr__(spec, "directory", str(spec_file.parent))
    object.__setattr__(spec, "checksum", spec_checksum(spec_file.parent, spec_file, spec.model_path))
    model = None
    if check_model:
        import mujoco

        if not spec.model_path.exists():
            raise ConfigError("model", f"file not found: {spec.model_path}", source)
        try:
            model = mujoco.MjModel.from_xml_path(str(spec.model_path))
        except ValueError as e:
            raise ConfigError("model", f"MJCF failed to load: {e}", source) from None
    validate(spec, model, source)
    if check_model:
        # robot.yaml's gains and ranges must fit the model's actuators (written at build)
        from roboreal.robots.model import build_model

        try:
            build_model(spec)
        except ConfigError as e:
            if e.source is not None:
                raise
            raise ConfigError(e.field, str(e).split(f"{e.field}: ", 1)[1] if e.field else str(e), source) from None
    return spec


# --------------------------------------------------------------------------- finding robots

ROBOT_PATH_ENV = "ROBOREAL_ROBOT_PATH"  # folders of <name>/robot.yaml, separated like PATH
ENTRY_POINT_GROUP = "roboreal.robots"  # a pip package's robots: name = a folder, a robot.yaml or a module


def _search_dirs() -> list[Path]:
    return [Path(p).expanduser() for p in os.environ.get(ROBOT_PATH_ENV, "").split(os.pathsep) if p]


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _entry_point_file(name: str, ep) -> Path:
    """The robot.yaml an entry point names: its object is a path (a robot.yaml or its
    folder), a module (robot.yaml next to it) or a function returning such a path."""
    try:
        target = ep.load()
        if callable(target) and not isinstance(target, (str, os.PathLike)):
            target = target()
    except Exception as e:  # noqa: BLE001 (a broken third-party package must not hide the others)
        raise ConfigError("robot", f"entry point {name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} failed to "
                          f"load: {type(e).__name__}: {e}") from None
    path = Path(getattr(target, "__file__", None) or target)
    if path.suffix == ".py":
        path = path.parent
    return path / "robot.yaml" if path.is_dir() else path


def looks_like_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref or ref.endswith((".yaml", ".yml")) or ref.startswith(".")


def robot_file(ref: str | Path) -> Path:
    """The robot.yaml a robot reference names. Looked up in order: a path (a robot.yaml or
    its folder); a robot shipped in `roboreal/robots/<name>/`; ``<dir>/<name>/robot.yaml``
    for each folder on ``$ROBOREAL_ROBOT_PATH``; the entry point `name` of group
    ``roboreal.robots`` (a pip-installed robot package)."""
    ref = str(ref)
    path = Path(ref).expanduser()
    if looks_like_path(ref) or path.is_dir():
        candidate = path / "robot.yaml" if path.is_dir() else path
        if not candidate.is_file():
            raise ConfigError("robot", f"{ref!r}: no robot.yaml there ({candidate} does not exist)")
        return candidate.resolve()
    for folder in [ROBOTS_DIR, *_search_dirs()]:
        candidate = folder / ref / "robot.yaml"
        if candidate.is_file():
            return candidate
    eps = _entry_points()
    if ref in eps:
        candidate = _entry_point_file(ref, eps[ref])
        if not candidate.is_file():
            raise ConfigError("robot", f"entry point {ref!r} ({eps[ref].value}) names {candidate}, which does not "
                              f"exist")
        return candidate
    raise ConfigError("robot", f"unknown robot {ref!r} (available: {', '.join(available_robots())}; or a path to a "
                      f"robot.yaml or its folder; robots are searched in roboreal/robots, in ${ROBOT_PATH_ENV} and in "
                      f"the {ENTRY_POINT_GROUP!r} entry points)")


def available_robots() -> list[str]:
    """Robot names found in the package, on the search path and as entry points."""
    names = set()
    for folder in [ROBOTS_DIR, *_search_dirs()]:
        names.update(p.parent.name for p in folder.glob("*/robot.yaml"))
    names.update(_entry_points())
    return sorted(names)


def robot_reference(spec: RobotSpec) -> str:
    """How to find `spec` again on this machine: its name if the name finds this robot.yaml,
    else the absolute path of its robot.yaml (written into run configs and bundle manifests)."""
    own = Path(spec.directory) / "robot.yaml"
    try:
        if robot_file(spec.name).resolve() == own.resolve():
            return spec.name
    except ConfigError:
        pass
    return str(own)


def load_robot(ref: str) -> RobotSpec:
    """Load a robot by name or path (see `robot_file` for where names are looked up). Cached
    per file and modification time: an edited robot.yaml or MJCF is loaded afresh."""
    path = robot_file(ref)
    stamps = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in [path, *sorted(path.parent.glob("*.xml"))])
    return _load_cached(path, stamps)


@lru_cache(maxsize=64)
def _load_cached(path: Path, stamps: tuple) -> RobotSpec:
    return load_robot_file(path)

