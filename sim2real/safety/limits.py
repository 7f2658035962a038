"""`SafetyLimits`: the limits one deployment enforces, tightened from the robot spec.

`robot.yaml`'s ``safety:`` section (`roboreal.robots.safety_spec.SafetySpec`) is the loosest
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

The fields, what a valid value is and which way is tighter are all read off `SafetySpec`
(its fields' metadata, `roboreal.robots.safety_spec`): a new limit is declared there and
`SafetyLimits` (and `LIMIT_KEYS`) has it; values are checked by the same `validate_safety`
as robot.yaml.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from roboreal.config import ConfigError
from roboreal.robots.safety_spec import SafetySpec, finite_number, validate_safety
from roboreal.robots.spec import RobotSpec

_PREFIX = "safety"


def _derive() -> tuple[tuple[dataclasses.Field, ...], dict[str, str], dict[str, type], set[str], tuple[str, ...],
                       set[str]]:
    """Everything below is read off `SafetySpec`'s fields (their metadata says which way is
    tighter), so a new limit is declared there only."""
    limit_fields, scalars, groups, optional, boxes, not_limits = [], {}, {}, set(), [], set()
    for f in dataclasses.fields(SafetySpec):
        if dataclasses.is_dataclass(f.default_factory):  # a nested section
            groups[f.name] = f.default_factory
            limit_fields.append(f)
            for g in dataclasses.fields(f.default_factory):
                key = f"{f.name}.{g.name}"
                scalars[key] = g.metadata["tighter"]
                if g.default is None:
                    optional.add(key)
            continue
        tighter = f.metadata.get("tighter")
        if tighter is None:
            not_limits.add(f.name)
            continue
        limit_fields.append(f)
        if tighter == "inside":
            boxes.append(f.name)
        else:
            scalars[f.name] = tighter
            if f.default is None:
                optional.add(f.name)
    return tuple(limit_fields), scalars, groups, optional, tuple(boxes), not_limits


# _SCALARS: field -> "smaller" | "larger" (which direction is tighter); _GROUPS: nested
# sections; _OPTIONAL: None = not checked (the loosest value); _NOT_LIMITS: behaviour.
_FIELDS, _SCALARS, _GROUPS, _OPTIONAL, _BOXES, _NOT_LIMITS = _derive()
# every limit as a dotted key ("max_target_rate", "watchdog.imu"), in SafetySpec's order:
# the names a deployment sets them by (the policy node's safety.* parameters)
LIMIT_KEYS: tuple[str, ...] = tuple(
    key for f in _FIELDS
    for key in ([f"{f.name}.{g.name}" for g in dataclasses.fields(_GROUPS[f.name])] if f.name in _GROUPS else [f.name]))


def _number(field: str, value: Any) -> float:
    return finite_number(field, value)


class _SafetyLimitsMethods:
    """The methods of `SafetyLimits` (its fields are `SafetySpec`'s limits, added below)."""

    @classmethod
    def from_spec(cls, spec: RobotSpec) -> "SafetyLimits":
        s = spec.safety
        values = {f.name: getattr(s, f.name) for f in _FIELDS}
        for k in _BOXES:
            values[k] = None if values[k] is None else tuple(map(float, values[k]))
        limits = cls(**values)
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
        """Each value on its own: finite, in range. Raises ConfigError naming the field.
        The rules are robot.yaml's (`roboreal.robots.safety_spec.validate_safety`)."""
        validate_safety(self, prefix=_PREFIX)

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


_HINTS = typing.get_type_hints(SafetySpec)
SafetyLimits = dataclasses.make_dataclass(
    "SafetyLimits", [(f.name, _HINTS[f.name]) for f in _FIELDS], bases=(_SafetyLimitsMethods,), frozen=True,
    namespace={"__module__": __name__, "__doc__": (
        "The effective safety limits of one deployment: `SafetySpec`'s fields less the behaviour "
        "ones (fault_mode, damping_kd), derived from it. Build with `from_spec` / `from_dict`; "
        "`tighten` returns a tighter copy.")})
