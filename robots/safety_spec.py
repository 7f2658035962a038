"""The ``safety:`` section of robot.yaml: declared once, in `SafetySpec`, and checked once,
in `validate_safety`.

Each field's metadata says what a valid value is (`valid`) and which way a deployment may
move it (`tighter`): robot.yaml's validation, `roboreal.sim2real.safety.SafetyLimits` (a
deployment's limits, which may only tighten) and the policy node's ``safety.*`` parameters
all follow from it, so a new limit is one field here plus the filter that enforces it
(`roboreal.sim2real.safety`, "Adding a limit").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from roboreal.config import ConfigError


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

