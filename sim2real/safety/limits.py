"""`SafetyLimits`: the limits one deployment enforces, tightened from the robot spec.

`robot.yaml`'s ``safety:`` section (`roboreal.robots.spec.SafetySpec`) is the loosest
the robot may ever be run. A deployment (a launch file, a bundle, an operator's YAML)
may *tighten* any limit but never loosen it::

    limits = SafetyLimits.from_spec(spec).tighten(velocity_scale=0.5, watchdog={"imu": 0.05})
    limits = SafetyLimits.from_spec(spec).tighten(**yaml_data["safety"])   # same keys as robot.yaml

Loosening (or an unknown key, or a malformed value) raises `ConfigError` naming the
field, e.g. ``safety.velocity_scale: 0.9 loosens the limit (robot.yaml allows at most 0.8)``.

What "tighter" means, field by field:

| field | tighter is |
|---|---|
| joint_position_margin | larger (further inside the hardware limits) |
| velocity_scale, torque_scale, max_target_rate | smaller |
| tilt_limit | smaller; setting one where the spec has none is tighter, removing one is looser |
| workspace_min / workspace_max | a box inside the spec's box (a box where the spec has none is tighter) |
| startup_ramp_time, fade_in_time | longer (gentler) |
| reset_max_joint_speed | smaller (a reset waits for a stiller robot) |
| watchdog.joint_states / .imu / .command | shorter timeouts |
| watchdog.future_stamp | smaller (less clock skew tolerated) |
| plausibility.* | smaller (a reading counts as impossible sooner) |

`fault_mode` and `damping_kd` are behaviour, not limits: they come from robot.yaml only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from roboreal.config import ConfigError
from roboreal.robots.spec import PlausibilitySpec, RobotSpec, WatchdogSpec

_PREFIX = "safety"

# field -> "smaller" | "larger": which direction is tighter.
_SCALARS = {
    "joint_position_margin": "larger",
    "velocity_scale": "smaller",
    "torque_scale": "smaller",
    "max_target_rate": "smaller",
    "tilt_limit": "smaller",
    "startup_ramp_time": "larger",
    "fade_in_time": "larger",
    "reset_max_joint_speed": "smaller",
    "watchdog.joint_states": "smaller",
    "watchdog.imu": "smaller",
    "watchdog.command": "smaller",
    "watchdog.future_stamp": "smaller",
    "plausibility.position_tolerance": "smaller",
    "plausibility.velocity_factor": "smaller",
    "plausibility.angular_velocity": "smaller",
    "plausibility.linear_acceleration": "smaller",
    "plausibility.quaternion_norm_tolerance": "smaller",
}
_GROUPS = {"watchdog": WatchdogSpec, "plausibility": PlausibilitySpec}  # nested sections
_OPTIONAL = {"tilt_limit", "watchdog.imu"}  # None = not checked (the loosest value)
_BOXES = ("workspace_min", "workspace_max")
_NOT_LIMITS = {"fault_mode", "damping_kd"}


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(field, f"must be finite, got {value}")
    return value


@dataclass(frozen=True)
class SafetyLimits:
    """The effective safety limits of one deployment (same fields as `SafetySpec`)."""

    joint_position_margin: float
    velocity_scale: float
    torque_scale: float
    max_target_rate: float
    tilt_limit: float | None
    workspace_min: tuple[float, float, float] | None
    workspace_max: tuple[float, float, float] | None
    startup_ramp_time: float
    fade_in_time: float
    reset_max_joint_speed: float
    watchdog: WatchdogSpec
    plausibility: PlausibilitySpec

    @classmethod
    def from_spec(cls, spec: RobotSpec) -> "SafetyLimits":
        s = spec.safety
        limits = cls(
            joint_position_margin=s.joint_position_margin, velocity_scale=s.velocity_scale,
            torque_scale=s.torque_scale, max_target_rate=s.max_target_rate, tilt_limit=s.tilt_limit,
            workspace_min=None if s.workspace_min is None else tuple(map(float, s.workspace_min)),
            workspace_max=None if s.workspace_max is None else tuple(map(float, s.workspace_max)),
            startup_ramp_time=s.startup_ramp_time, fade_in_time=s.fade_in_time,
            reset_max_joint_speed=s.reset_max_joint_speed, watchdog=s.watchdog, plausibility=s.plausibility)
        limits.validate()
        return limits

    @classmethod
    def from_dict(cls, d: dict) -> "SafetyLimits":
        """The inverse of `to_dict` (e.g. the limits a policy node reports in ``~/info``)."""
        d = dict(d)
        for k in _BOXES:
            d[k] = None if d.get(k) is None else tuple(map(float, d[k]))
        for g, group_cls in _GROUPS.items():
            d[g] = group_cls(**d[g])
        limits = cls(**d)
        limits.validate()
        return limits

    # ----- dotted access ("watchdog.imu", "plausibility.angular_velocity") -----
    def get(self, key: str) -> Any:
        group, _, name = key.partition(".")
        if name:
            return getattr(getattr(self, group), name)
        return getattr(self, key)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in _BOXES:
            d[k] = None if d[k] is None else list(d[k])
        return d

    # ----- checks -----
    def validate(self) -> None:
        """Each value on its own: finite, in range. Raises ConfigError naming the field."""
        for key in _SCALARS:
            v = self.get(key)
            if v is None and key in _OPTIONAL:
                continue
            f = f"{_PREFIX}.{key}"
            v = _number(f, v)
            if key in ("velocity_scale", "torque_scale") and not 0 < v <= 1:
                raise ConfigError(f, f"must be in (0, 1], got {v}")
            non_negative = ("joint_position_margin", "startup_ramp_time", "fade_in_time", "watchdog.future_stamp",
                            "plausibility.position_tolerance")
            if key in non_negative:
                if v < 0:
                    raise ConfigError(f, f"must be >= 0, got {v}")
            elif key not in ("velocity_scale", "torque_scale") and not v > 0:
                raise ConfigError(f, f"must be positive, got {v}")
            if key == "plausibility.velocity_factor" and v < 1:
                raise ConfigError(f, f"must be >= 1 (a joint may reach its velocity limit), got {v}")
        lo, hi = self.workspace_min, self.workspace_max
        if (lo is None) != (hi is None):
            raise ConfigError(f"{_PREFIX}.workspace_max" if hi is None else f"{_PREFIX}.workspace_min",
                              "workspace_min and workspace_max go together")
        if lo is not None:
            for name, box in (("workspace_min", lo), ("workspace_max", hi)):
                if len(box) != 3:
                    raise ConfigError(f"{_PREFIX}.{name}", f"expected 3 values (x, y, z), got {len(box)}")
                for i, v in enumerate(box):
                    _number(f"{_PREFIX}.{name}[{i}]", v)
            for i in range(3):
                if not lo[i] < hi[i]:
                    raise ConfigError(f"{_PREFIX}.workspace_min[{i}]",
                                      f"{lo[i]} must be below workspace_max[{i}] = {hi[i]}")

    def check_within(self, base: "SafetyLimits") -> None:
        """Raise ConfigError naming the first field where `self` is looser than `base`."""
        self.validate()
        for key, tighter in _SCALARS.items():
            new, old = self.get(key), base.get(key)
            f = f"{_PREFIX}.{key}"
            if old is None:
                continue  # spec does not check it: any value (or none) is at least as tight
            if new is None:
                raise ConfigError(f, f"removing the limit loosens it (robot.yaml sets {old})")
            if tighter == "smaller" and new > old:
                raise ConfigError(f, f"{new} loosens the limit (robot.yaml allows at most {old})")
            if tighter == "larger" and new < old:
                raise ConfigError(f, f"{new} loosens the limit (robot.yaml requires at least {old})")
        if base.workspace_min is not None:
            if self.workspace_min is None:
                raise ConfigError(f"{_PREFIX}.workspace_min", "removing the workspace box loosens it")
            for i in range(3):
                if self.workspace_min[i] < base.workspace_min[i]:
                    raise ConfigError(f"{_PREFIX}.workspace_min[{i}]", f"{self.workspace_min[i]} loosens the "
                                      f"limit (robot.yaml requires at least {base.workspace_min[i]})")
                if self.workspace_max[i] > base.workspace_max[i]:
                    raise ConfigError(f"{_PREFIX}.workspace_max[{i}]", f"{self.workspace_max[i]} loosens the "
                                      f"limit (robot.yaml allows at most {base.workspace_max[i]})")

    # ----- tightening -----
    def tighten(self, **overrides: Any) -> "SafetyLimits":
        """A copy with `overrides` applied; each must be at least as tight as `self`.

        Keys are the robot.yaml ``safety:`` keys; the nested sections take a (partial) mapping,
        ``watchdog={"imu": 0.05}``, or dotted keys, ``**{"watchdog.imu": 0.05}``.
        """
        flat: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in _GROUPS:
                if isinstance(value, _GROUPS[key]):
                    value = dataclasses.asdict(value)
                if not isinstance(value, dict):
                    raise ConfigError(f"{_PREFIX}.{key}", f"expected a mapping, got {value!r}")
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        changes: dict[str, Any] = {}
        groups = {g: dataclasses.asdict(getattr(self, g)) for g in _GROUPS}
        for key, value in flat.items():
            f = f"{_PREFIX}.{key}"
            if key in _NOT_LIMITS:
                raise ConfigError(f, "is behaviour, not a limit: it is set in robot.yaml only")
            if key in _BOXES:
                if value is not None:
                    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                        raise ConfigError(f, f"expected 3 numbers, got {value!r}")
                    value = tuple(_number(f"{f}[{i}]", v) for i, v in enumerate(value))
                changes[key] = value
            elif key in _SCALARS:
                if value is not None or key not in _OPTIONAL:
                    value = _number(f, value)
                group, _, name = key.partition(".")
                if name:
                    groups[group][name] = value
                else:
                    changes[key] = value
            else:
                known = sorted([k for k in _SCALARS if "." not in k] + list(_BOXES) + list(_GROUPS))
                raise ConfigError(f, f"unknown or not a tightenable limit (known: {', '.join(known)})")
        new = dataclasses.replace(self, **changes, **{g: cls(**groups[g]) for g, cls in _GROUPS.items()})
        new.check_within(self)
        return new
