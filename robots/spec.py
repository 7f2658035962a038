"""Robot spec (`robot.yaml`): the single source of truth for joints, gains and limits.

Training, export and deployment all read it. `load_robot(name)` parses and validates
the YAML against the MJCF model next to it; any inconsistency (unknown joint, missing
field, default pose outside limits, safety limits looser than the hardware limits) is
refused with a `ConfigError` naming the field. The simulated actuators take their gains
and ranges from the spec too: `roboreal.robots.model.build_model(spec)` writes them into
the MJCF before compiling (and `load_robot_file` refuses values the model cannot take).
The ``safety:`` section is declared once, in `SafetySpec` (its fields' metadata say what
is valid and which way is tighter), and checked once, in `validate_safety`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from roboreal.config import ConfigError, from_dict, load_yaml

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


def _limit(default, valid: str | None, tighter: str | None):
    """A safety field: `valid` is the rule a value must meet on its own (`validate_safety`),
    `tighter` which way a deployment may move it (`SafetyLimits.tighten`; None = behaviour,
    not a limit). A default of None means "not checked" (the loosest value)."""
    return field(default=default, metadata={"valid": valid, "tighter": tighter})


# `valid` rules: name -> (test, message)
_SAFETY_RULES = {
    "positive": (lambda v: v > 0, "must be positive"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "fraction": (lambda v: 0 < v <= 1, "must be in (0, 1] (a deployment cannot exceed the hardware)"),
    "factor": (lambda v: v >= 1, "must be >= 1 (a joint may reach its velocity limit)"),
}


@dataclass(frozen=True)
class WatchdogSpec:
    """How old a reading may be. Age = the node's clock minus the message's header stamp
    (when the sensor measured), so silence, a delayed stream and a frozen stamp all trip."""

    joint_states: float = _limit(0.1, "positive", "smaller")  # s: older joint states make the robot safe (latched)
    imu: float | None = _limit(None, "positive", "smaller")  # s, quadrupeds only
    command: float = _limit(0.5, "positive", "smaller")  # s without a command/goal before the robot holds (not latched)
    # s a header stamp may lie ahead of the node's clock (else refused)
    future_stamp: float = _limit(0.05, "non_negative", "smaller")


@dataclass(frozen=True)
class PlausibilitySpec:
    """Readings no healthy sensor produces. A finite reading beyond these latches the fault
    mode, naming the field and its value (NaN/inf are the non-finite guard's)."""

    # rad (m) an actuated joint may read beyond its hardware limits
    position_tolerance: float = _limit(0.2, "non_negative", "smaller")
    velocity_factor: float = _limit(3.0, "factor", "smaller")  # a joint speed beyond this many times its velocity_limit
    angular_velocity: float = _limit(35.0, "positive", "smaller")  # rad/s per gyro axis (a 2000 deg/s IMU's range)
    linear_acceleration: float = _limit(160.0, "positive", "smaller")  # m/s^2 per accelerometer axis (16 g IMU)
    quaternion_norm_tolerance: float = _limit(0.1, "positive", "smaller")  # | |orientation| - 1 | of the IMU quaternion


@dataclass(frozen=True)
class SafetySpec:
    """Limits a deployment enforces. A deployment may tighten these, never loosen them.

    The one declaration of the safety section: each field's metadata says what a valid
    value is and which way is tighter; `validate_safety` checks it and
    `roboreal.sim2real.safety.SafetyLimits` (the deployment's limits) takes its fields
    from here, so a new limit is added in this class (and its nested sections) only.
    """

    joint_position_margin: float = _limit(0.05, "non_negative", "larger")  # kept inside the hardware position limits
    velocity_scale: float = _limit(0.8, "fraction", "smaller")  # fraction of each joint's velocity limit
    torque_scale: float = _limit(0.9, "fraction", "smaller")  # fraction of each joint's torque limit
    max_target_rate: float = _limit(2.0, "positive", "smaller")  # rad/s: fastest a joint target may move
    fault_mode: Literal["hold", "damping"] = _limit("hold", None, None)
    damping_kd: float = _limit(1.0, "non_negative", None)  # kd used in damping mode
    tilt_limit: float | None = _limit(None, "positive", "smaller")  # rad of roll/pitch (quadrupeds)
    # end-effector box (manipulators), m: tighter is a box inside this one
    workspace_min: tuple[float, float, float] | None = _limit(None, "box", "inside")
    workspace_max: tuple[float, float, float] | None = _limit(None, "box", "inside")
    startup_ramp_time: float = _limit(2.0, "non_negative", "larger")  # s from the measured pose to the default pose
    fade_in_time: float = _limit(1.0, "non_negative", "larger")  # s over which the policy's actions are blended in
    # rad/s: a reset is refused while any joint moves faster
    reset_max_joint_speed: float = _limit(0.5, "positive", "smaller")
    watchdog: WatchdogSpec = field(default_factory=WatchdogSpec)
    plausibility: PlausibilitySpec = field(default_factory=PlausibilitySpec)


def finite_number(field_path: str, value, source: str | None = None) -> float:
    """`value` as a finite float, else a ConfigError naming `field_path`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(field_path, f"expected a number, got {value!r}", source)
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(field_path, f"must be finite, got {value}", source)
    return value


def validate_safety(s, source: str | None = None, prefix: str = "safety") -> None:
    """Check each value of a safety section on its own (finite, in range; the workspace
    box). The one place these rules live: `validate` (robot.yaml) and `SafetyLimits` (a
    deployment's limits, same field names; fields it lacks are skipped) both call it.
    Checks that need the robot (margin vs joint ranges, what a quadruped needs) are in
    `validate`."""

    def section(obj, cls, path: str) -> None:
        for f in dataclasses.fields(cls):
            if not hasattr(obj, f.name):
                continue
            value, fpath = getattr(obj, f.name), f"{path}.{f.name}"
            if dataclasses.is_dataclass(f.default_factory):
                section(value, f.default_factory, fpath)
                continue
            rule = f.metadata.get("valid")
            if rule is None or rule == "box" or (value is None and f.default is None):
                continue
            v = finite_number(fpath, value, source)
            test, message = _SAFETY_RULES[rule]
            if not test(v):
                raise ConfigError(fpath, f"{message}, got {v}", source)

    section(s, SafetySpec, prefix)
    lo, hi = getattr(s, "workspace_min", None), getattr(s, "workspace_max", None)
    if (lo is None) != (hi is None):
        raise ConfigError(f"{prefix}.workspace_max" if hi is None else f"{prefix}.workspace_min",
                          "workspace_min and workspace_max go together", source)
    if lo is None:
        return
    for name, box in (("workspace_min", lo), ("workspace_max", hi)):
        if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 3:
            raise ConfigError(f"{prefix}.{name}", f"expected 3 values (x, y, z), got {box!r}", source)
        for i, v in enumerate(box):
            finite_number(f"{prefix}.{name}[{i}]", v, source)
    for i in range(3):
        if not lo[i] < hi[i]:
            raise ConfigError(f"{prefix}.workspace_min[{i}]", f"{lo[i]} must be below workspace_max[{i}] = {hi[i]}",
                              source)


@dataclass(frozen=True)
class SitesSpec:
    imu: str | None = None
    end_effector: str | None = None
    feet: tuple[str, ...] = ()
    base_body: str | None = None


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
    description: str = ""
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
    sites = [("sites.imu", spec.sites.imu), ("sites.end_effector", spec.sites.end_effector)]
    sites += [(f"sites.feet[{i}]", f) for i, f in enumerate(spec.sites.feet)]
    for fpath, site in sites:
        if site is not None and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site) < 0:
            raise err(fpath, f"{site!r} is not a site of {spec.model}")
    if spec.sites.base_body is not None and mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.sites.base_body) < 0:
        raise err("sites.base_body", f"{spec.sites.base_body!r} is not a body of {spec.model}")
    if spec.gripper is not None:
        for i, g in enumerate(spec.gripper.joints):
            if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, g) < 0:
                raise err(f"gripper.joints[{i}]", f"{g!r} is not a joint of {spec.model}")


def spec_checksum(robot_dir: Path, spec_file: Path) -> str:
    """sha256 over robot.yaml and the MJCF files it uses: any edit changes it."""
    h = hashlib.sha256()
    for p in [spec_file, *sorted(robot_dir.glob("*.xml"))]:
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
    object.__setattr__(spec, "checksum", spec_checksum(spec_file.parent, spec_file))
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


def available_robots() -> list[str]:
    return sorted(p.parent.name for p in ROBOTS_DIR.glob("*/robot.yaml"))


@lru_cache(maxsize=None)
def load_robot(name: str) -> RobotSpec:
    """Load a robot shipped in `robots/<name>/` (or a path to a robot.yaml)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_robot_file(path)
    spec_file = ROBOTS_DIR / name / "robot.yaml"
    if not spec_file.exists():
        raise ConfigError("robot", f"unknown robot {name!r} (available: {available_robots()})")
    return load_robot_file(spec_file)
