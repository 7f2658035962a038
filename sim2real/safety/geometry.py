"""Small vector helpers of the safety chain: measured vectors, the gravity direction, tilt.

3-vectors and quaternions are handled as Python floats: on vectors this short, numpy's
per-call overhead costs more than the arithmetic (the chain runs every control period).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def as_vector(x, lengths: Sequence[int]) -> np.ndarray | None:
    """`x` as a 1-D float array whose length is one of `lengths`, or None if it is not one."""
    if x is None:
        return None
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if a.ndim != 1 or len(a) not in lengths:
        return None
    return a


def finite_floats(x, size: int) -> list[float] | None:
    """`x` as `size` finite Python floats, or None if it is not that."""
    v = as_vector(x, (size,))
    if v is None:
        return None
    v = v.tolist()
    return v if all(map(math.isfinite, v)) else None


def _unit(v: Sequence[float]) -> list[float] | None:
    """`v` (finite) scaled to unit length, or None if it is zero. Scaled by its largest
    magnitude first, so huge and tiny (subnormal) vectors normalize too."""
    s = max(map(abs, v))
    if not (math.isfinite(s) and s > 0):
        return None
    v = [c / s for c in v]
    norm = math.hypot(*v)
    return [c / norm for c in v]


def gravity_direction(state) -> list[float] | None:
    """`projected_gravity` as three Python floats (math on a 3-vector is cheaper without numpy)."""
    if state is None:
        return None
    g = finite_floats(getattr(state, "gravity", None), 3)
    if g is None:
        quat = finite_floats(getattr(state, "orientation", None), 4)
        quat = None if quat is None else _unit(quat)
        if quat is None:
            return None
        w, x, y, z = quat
        # R^T (0, 0, -1): minus the third row of R(quat).
        g = (-2 * (x * z - w * y), -2 * (y * z + w * x), -(1 - 2 * (x * x + y * y)))
    return _unit(g)


def projected_gravity(state) -> np.ndarray | None:
    """Unit gravity direction in the base frame from `state.gravity` or `state.orientation`
    (quaternion w, x, y, z); None if neither is usable."""
    g = gravity_direction(state)
    return None if g is None else np.array(g)


def roll_pitch(gravity: Sequence[float]) -> tuple[float, float]:
    """Roll and pitch (rad) from a unit projected gravity vector ((0, 0, -1) upright)."""
    gx, gy, gz = gravity
    return math.atan2(-gy, -gz), math.asin(max(-1.0, min(1.0, gx)))
