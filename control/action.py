"""How a policy's normalized action in [-1, 1] becomes a joint command, and back.

One mapping, used everywhere: the simulated envs apply it to torch tensors every step,
the bundle writes it into the manifest (`ActionMapping.to_dict`), the safety chain's
`ActionMap` applies it to numpy arrays on the robot, and the policy node inverts it
(`ActionMapping.to_action`) to record what the robot actually did. numpy arrays and torch
tensors go through the same formula (`ActionMapping._map`), so training and deployment
cannot disagree about it.

- ``joint_position_absolute``: target = offset + scale * action   (offset = default pose)
- ``joint_position_delta``:    target = previous target + scale * action
- ``force``:                   force  = offset + scale * action  (torque/force control)

Margin-aware: a position mapping may carry ``lower``/``upper`` bounds, the robot's
position limits shrunk by ``safety.joint_position_margin`` (what `ActionMapping.for_robot`
fills in). Position targets are then clipped into them exactly as the safety chain's
`PositionLimit` clips: ``minimum(maximum(target, lower), upper)`` (NaN stays NaN). So a
delta target accumulates from the clipped previous target in training just as it does
on the robot. Force mappings have no bounds (``None``); a mapping without bounds (an
old manifest) does not clip.

`GripperMapping`: a normalized gripper action (-1 closed .. +1 open) -> the opening (m).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Sequence

import numpy as np

ActionType = Literal["joint_position_absolute", "joint_position_delta", "force"]
ACTION_TYPES: tuple[str, ...] = ("joint_position_absolute", "joint_position_delta", "force")
POSITION_TYPES: tuple[str, ...] = ("joint_position_absolute", "joint_position_delta")


def _torch_of(x: Any):
    """The torch module if `x` is a torch tensor, else None (never imports torch itself:
    the robot side may run without it)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return torch
    return None


def _np_clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)  # np.clip without its overhead; as PositionLimit


def _torch_clip(x, lo, hi):
    torch = sys.modules["torch"]
    if isinstance(lo, torch.Tensor):
        return torch.minimum(torch.maximum(x, lo), hi)
    return x.clamp(lo, hi)


def _tuple(values, name: str) -> tuple:
    try:
        return tuple(values)
    except TypeError:
        raise ValueError(f"action mapping: {name} must be a sequence, got {values!r}") from None


@dataclass(frozen=True)
class ActionMapping:
    type: ActionType
    joints: tuple[str, ...]  # which actuated joints the action drives, in order
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    # position targets are clipped into [lower, upper] (limits minus margin); None: no clipping
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in ACTION_TYPES:
            raise ValueError(f"action mapping: unknown type {self.type!r} (expected one of {ACTION_TYPES})")
        for name in ("joints", "scale", "offset"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name))
        n = len(self.joints)
        if len(self.scale) != n or len(self.offset) != n:
            raise ValueError(f"action mapping: scale ({len(self.scale)}) and offset ({len(self.offset)}) "
                             f"must have one value per joint ({n})")
        if (self.lower is None) != (self.upper is None):
            raise ValueError("action mapping: lower and upper bounds come together (or neither)")
        if self.lower is None:
            return
        if self.type not in POSITION_TYPES:
            raise ValueError(f"action mapping: a {self.type!r} mapping has no position bounds")
        for name in ("lower", "upper"):
            values = tuple(float(v) for v in _tuple(getattr(self, name), name))
            if len(values) != n:
                raise ValueError(f"action mapping: {name} ({len(values)}) must have one value per joint ({n})")
            object.__setattr__(self, name, values)
        for j, lo, hi in zip(self.joints, self.lower, self.upper):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"action mapping: bounds of joint {j!r} must be finite with lower <= upper, "
                                 f"got [{lo}, {hi}]")

    @classmethod
    def for_robot(cls, spec, type: ActionType, scale: float | Sequence[float],
                  offset: float | Sequence[float] | None = None,
                  joints: Sequence[str] | None = None) -> "ActionMapping":
        """The mapping of a task on robot `spec` (a `RobotSpec`).

        joints: the actuated joints the action drives (default: all, in spec order).
        scale, offset: one value for every joint or one per joint; offset defaults to the
        default pose for absolute targets and to 0 for delta targets and forces.
        Position mappings get the bounds the safety chain enforces: the spec's position
        limits shrunk by ``safety.joint_position_margin``.
        """
        names = list(spec.actuated_names)
        joints = tuple(names if joints is None else joints)
        for j in joints:
            if j not in names:
                raise ValueError(f"action mapping: {j!r} is not an actuated joint of {spec.name} ({names})")
        idx = [names.index(j) for j in joints]
        n = len(joints)

        def per_joint(v, what: str) -> tuple[float, ...]:
            if isinstance(v, (int, float)):
                return (float(v),) * n
            v = tuple(float(x) for x in v)
            if len(v) != n:
                raise ValueError(f"action mapping: {what} has {len(v)} values for {n} joints")
            return v

        if offset is None:
            offset = (tuple(float(x) for x in np.asarray(spec.array("default"))[idx])
                      if type == "joint_position_absolute" else 0.0)
        lower = upper = None
        if type in POSITION_TYPES:
            margin = float(spec.safety.joint_position_margin)
            lower = tuple(float(x) for x in np.asarray(spec.lower, dtype=np.float64)[idx] + margin)
            upper = tuple(float(x) for x in np.asarray(spec.upper, dtype=np.float64)[idx] - margin)
        return cls(type, joints, per_joint(scale, "scale"), per_joint(offset, "offset"), lower, upper)

    @property
    def size(self) -> int:
        return len(self.joints)

    @property
    def bounded(self) -> bool:
        """Whether position targets are clipped into [lower, upper]."""
        return self.lower is not None

    # ----- the formula (one, for numpy and torch) -----
    def _map(self, action, previous, scale, offset, lower, upper, clip):
        base = previous if self.type == "joint_position_delta" else offset
        out = base + scale * action
        if lower is not None:
            out = clip(out, lower, upper)
        return out

    def _unmap(self, values, previous, scale, offset, clip):
        base = previous if self.type == "joint_position_delta" else offset
        return clip((values - base) / scale, -1.0, 1.0)

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(scale, offset, lower, upper) as float64 arrays, converted once (read-only)."""
        out = []
        for v in (self.scale, self.offset, self.lower, self.upper):
            a = None if v is None else np.asarray(v, dtype=np.float64)
            if a is not None:
                a.flags.writeable = False
            out.append(a)
        return tuple(out)

    @cached_property
    def _tensor_cache(self) -> dict:
        return {}

    def tensors(self, device, dtype) -> tuple:
        """(scale, offset, lower, upper) as torch tensors on `device`, cached per device/dtype."""
        key = (str(device), dtype)
        cached = self._tensor_cache.get(key)
        if cached is None:
            torch = sys.modules["torch"]
            cached = tuple(None if a is None else torch.tensor(a, dtype=dtype, device=device)
                           for a in self.arrays)
            self._tensor_cache[key] = cached
        return cached

    def _torch_arrays(self, torch, x):
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        return self.tensors(x.device, dtype), dtype

    def _operands(self, x, previous):
        """`x` and `previous` as arrays of one kind (torch tensors of x's dtype and device, or
        float64 numpy), with the mapping's (scale, offset, lower, upper) and clip of that kind."""
        if self.type == "joint_position_delta" and previous is None:
            raise ValueError("joint_position_delta needs the previous target")
        torch = _torch_of(x)
        if torch is not None:
            arrays, dtype = self._torch_arrays(torch, x)
            x = x.to(dtype)
            if previous is not None:
                previous = torch.as_tensor(previous, dtype=dtype, device=x.device)
            return x, previous, arrays, _torch_clip
        if not isinstance(x, np.ndarray):
            x = np.asarray(x, dtype=np.float64)
        if previous is not None and not isinstance(previous, np.ndarray):
            previous = np.asarray(previous, dtype=np.float64)
        return x, previous, self.arrays, _np_clip

    def to_command(self, action, previous_target=None):
        """Map a (clipped) normalized action, shape (..., size), to joint targets or forces.

        numpy arrays (or sequences) give float64 numpy arrays; torch tensors give tensors of
        their dtype on their device. Delta mappings need the previous target; bounded
        position mappings clip the target into [lower, upper] (see the module docstring)."""
        action, previous, (scale, offset, lower, upper), clip = self._operands(action, previous_target)
        return self._map(action, previous, scale, offset, lower, upper, clip)

    def to_action(self, values, previous=None):
        """The inverse: joint targets / forces (of `joints`, shape (..., size)) -> the
        normalized action that produces them, clipped to [-1, 1]. For a chain output that
        was rate-limited or clipped, this is the action the robot actually carried out.
        Delta mappings need the previous target (the command before `values`)."""
        values, previous, (scale, offset, _, _), clip = self._operands(values, previous)
        return self._unmap(values, previous, scale, offset, clip)

    # ----- manifest -----
    def to_dict(self) -> dict:
        d = {"type": self.type, "joints": list(self.joints), "scale": list(map(float, self.scale)),
             "offset": list(map(float, self.offset))}
        if self.lower is not None:
            d["lower"] = list(self.lower)
            d["upper"] = list(self.upper)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "ActionMapping":
        """From `to_dict` output (other keys ignored). Without ``lower``/``upper`` (a manifest
        written before mappings carried bounds) the mapping does not clip."""
        lower, upper = data.get("lower"), data.get("upper")
        return cls(type=data["type"], joints=tuple(data["joints"]), scale=tuple(data["scale"]),
                   offset=tuple(data["offset"]), lower=None if lower is None else tuple(lower),
                   upper=None if upper is None else tuple(upper))


@dataclass(frozen=True)
class GripperMapping:
    """A normalized gripper action (-1 closed .. +1 open) -> the opening (m):
    ``closed + (a + 1) / 2 * (open - closed)`` for ``a`` clipped to [-1, 1]."""

    open: float
    closed: float

    @classmethod
    def for_robot(cls, spec) -> "GripperMapping":
        g = spec.gripper
        if g is None:
            raise ValueError(f"robot {spec.name!r} has no gripper")
        return cls(open=float(g.open), closed=float(g.closed))

    @property
    def range(self) -> tuple[float, float]:
        """(smallest, largest) opening."""
        return min(self.open, self.closed), max(self.open, self.closed)

    def to_command(self, action):
        """float -> float, numpy array -> array, torch tensor -> tensor. NaN stays NaN (the
        safety chain refuses it before it gets here)."""
        torch = _torch_of(action)
        if torch is not None:
            a = action.clamp(-1.0, 1.0)
        elif isinstance(action, np.ndarray):
            a = _np_clip(action, -1.0, 1.0)
        else:
            a = float(action)
            if a > 1.0:
                a = 1.0
            elif a < -1.0:
                a = -1.0
        return self.closed + (a + 1.0) * 0.5 * (self.open - self.closed)
