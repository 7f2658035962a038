"""The filters of the safety chain, one job each, in chain order.

Every filter has two hooks, both optional:

- ``supervise(ctx)`` (first pass, all filters in order): inspect the inputs, latch a
  fault, request a mode (`StepContext.request`; the most severe request wins).
- ``apply(ctx)`` (second pass, all filters in order, after the mode has picked where the
  target comes from): move the command toward the filter's limit.

So a fault seen at step k already shapes step k's output, and every shaping filter sees
the target the mode asked for (policy, ramp, hold pose or measured pose). A filter
reports an intervention with ``ctx.intervene(name, magnitude)``; the chain accumulates
``count``, ``last_time`` and ``max_magnitude`` per filter.

Position targets are shaped by intervals (`StepContext.constrain`): rate, position,
velocity and torque each add one, and the target is clipped into the feasible interval.
Where two cannot both hold (e.g. the robot was pushed far from its previous target), the
higher priority wins: position limits > target rate (these two depend on the command alone
and always hold together) > velocity bound > torque bound. Where the gains travel with the
command, the torque bound is then met by scaling them (`TorqueLimit.bound_gains`); with the
robot's fixed gains the target is the point of the higher-priority interval nearest to it.

The chain runs on the robot every control period, on vectors of a few to a few dozen
values, where numpy's per-call overhead dominates: the filters take the usual case (finite
inputs, nothing to clip) with as few numpy calls as possible and fall back to the general
code only when it is needed. `all_finite` / `same_values` answer on the Python floats of a
vector; 3-vectors and quaternions are Python floats; per-period limits are computed once
per dt; `np.minimum(np.maximum(...))` stands for `np.clip`, which costs three times as much.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from roboreal.sim2real.safety.types import (
    PRIO_POSITION,
    PRIO_RATE,
    PRIO_TORQUE,
    PRIO_VELOCITY,
    StepContext,
    all_finite,
    all_positive,
    same_values,
)


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


def _count_non_finite(v: np.ndarray) -> int:
    return 0 if all_finite(v) else int((~np.isfinite(v)).sum())


def _unit(v: Sequence[float]) -> list[float] | None:
    """`v` (finite) scaled to unit length, or None if it is zero. Scaled by its largest
    magnitude first, so huge and tiny (subnormal) vectors normalize too."""
    s = max(map(abs, v))
    if not (math.isfinite(s) and s > 0):
        return None
    v = [c / s for c in v]
    norm = math.hypot(*v)
    return [c / norm for c in v]


def _finite_floats(x, size: int) -> list[float] | None:
    """`x` as `size` finite Python floats, or None if it is not that."""
    v = as_vector(x, (size,))
    if v is None:
        return None
    v = v.tolist()
    return v if all(map(math.isfinite, v)) else None


def gravity_direction(state) -> list[float] | None:
    """`projected_gravity` as three Python floats (math on a 3-vector is cheaper without numpy)."""
    if state is None:
        return None
    g = _finite_floats(getattr(state, "gravity", None), 3)
    if g is None:
        quat = _finite_floats(getattr(state, "orientation", None), 4)
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


class SafetyFilter:
    """Base class: a named step of the chain. Override `supervise` and/or `apply`."""

    name = "filter"

    def supervise(self, ctx: StepContext) -> None:
        pass

    def apply(self, ctx: StepContext) -> None:
        pass

    def reset(self) -> None:
        """Clear latched state (called by `SafetyChain.reset`; the e-stop ignores it)."""

    @property
    def latched(self) -> str | None:
        """Why this filter holds the robot in a safe mode until reset, or None."""
        return None


class LatchingFilter(SafetyFilter):
    """A filter that latches a fault: `_reason` says why until `reset` clears it."""

    _reason: str | None = None

    @property
    def latched(self) -> str | None:
        return self._reason

    def reset(self) -> None:
        self._reason = None

    def latch(self, reason: str) -> None:
        """Latch with `reason`, unless already latched (the first reason is the one kept)."""
        if self._reason is None:
            self._reason = reason


def summarize(reasons: Sequence[str], most: int = 3) -> str:
    """The first `most` reasons, and how many more there were."""
    more = f" (and {len(reasons) - most} more)" if len(reasons) > most else ""
    return "; ".join(reasons[:most]) + more


# --------------------------------------------------------------------------- 1
class NonFiniteGuard(LatchingFilter):
    """NaN/inf (or a wrong shape) in the action, the measured state or the clock latches
    the spec's fault mode (hold for arms, damping for quadrupeds) until `reset`.

    Checked: the action, joint positions and velocities (all joints given), the clock
    `now`, and where a tilt limit is configured, a usable orientation or gravity vector.
    Magnitude: how many bad values this step (0 while only latched).
    """

    name = "non_finite"

    def __init__(self, fault_mode: str, action_size: int, n_joints: int, n_actuated: int,
                 needs_orientation: bool):
        self.fault_mode = fault_mode
        self.action_size = action_size
        self.lengths = tuple(sorted({n_joints, n_actuated}))
        self.needs_orientation = needs_orientation

    def problems(self, ctx: StepContext) -> tuple[int, list[str]]:
        bad, why = 0, []
        if not math.isfinite(ctx.now):
            bad, why = bad + 1, why + ["now is not finite"]
        if ctx.action is None:
            bad, why = bad + 1, why + [f"action is not a vector of {self.action_size} numbers"]
        else:
            n = _count_non_finite(ctx.action)
            if n:
                bad, why = bad + n, why + [f"{n} non-finite action value(s)"]
        st = ctx.state
        for attr in ("position", "velocity"):
            v = as_vector(getattr(st, attr, None), self.lengths)
            if v is None:
                bad, why = bad + 1, why + [f"state.{attr} is not a vector of {' or '.join(map(str, self.lengths))}"]
            else:
                n = _count_non_finite(v)
                if n:
                    bad, why = bad + n, why + [f"{n} non-finite state.{attr} value(s)"]
        if self.needs_orientation:
            for attr, size in (("orientation", 4), ("gravity", 3)):
                raw = getattr(st, attr, None)
                if raw is not None:
                    v = as_vector(raw, (size,))
                    if v is None or not all_finite(v):
                        bad, why = bad + 1, why + [f"state.{attr} is malformed or not finite"]
            if ctx.gravity(gravity_direction) is None:
                bad, why = bad + 1, why + ["no usable state.orientation or state.gravity"]
        return bad, why

    def supervise(self, ctx: StepContext) -> None:
        bad, why = self.problems(ctx)
        if bad:
            self.latch("; ".join(why))
        if self._reason is not None:
            ctx.request(self.fault_mode)
            ctx.intervene(self.name, bad)


class PlausibilityGuard(LatchingFilter):
    """Readings no healthy sensor produces latch the fault mode until `reset`; the reason
    names the field and its value. Finite readings only (NaN/inf are the non-finite guard's):

    - an actuated joint's position beyond its hardware limits by more than position_tolerance;
    - a joint speed beyond velocity_factor x its velocity limit, as reported (velocity) or as
      implied by two successive position readings (a glitching encoder; position_tolerance
      of slack);
    - a gyro axis beyond angular_velocity, an accelerometer axis beyond linear_acceleration,
      an IMU quaternion whose norm is off 1 by more than quaternion_norm_tolerance.

    The readings it rejects are not used this step: an implausible position or speed reads as
    unknown (NaN) to every later filter (no velocity or torque bound is computed from it, and
    damping holds that joint's last target instead of following it; `ctx.suspect`).
    Magnitude: how far beyond its bound the worst reading is (0 while only latched).
    """

    name = "plausibility"

    def __init__(self, fault_mode: str, joint_names: Sequence[str], lower: np.ndarray, upper: np.ndarray,
                 velocity_limit: np.ndarray, spec):
        self.fault_mode = fault_mode
        self.joint_names = tuple(joint_names)
        self.tolerance = float(spec.position_tolerance)
        self.lo, self.hi = lower - self.tolerance, upper + self.tolerance
        self.max_speed = velocity_limit * float(spec.velocity_factor)
        self.gyro, self.accel = float(spec.angular_velocity), float(spec.linear_acceleration)
        self.quat_tolerance = float(spec.quaternion_norm_tolerance)
        self._last: tuple[np.ndarray, float] | None = None  # (q, when) of the last reading

    def reset(self) -> None:
        super().reset()
        self._last = None

    def _joint(self, what: str, i: int, value: float, bound: str, excess: float) -> tuple[str, float]:
        return f"joint_states.{what}[{self.joint_names[i]}] = {value:.6g} {bound}", excess

    def problems(self, ctx: StepContext, history: bool = True) -> tuple[list[tuple[str, float]], np.ndarray]:
        """[(reason, excess)] and the mask of suspect joints (implausible or non-finite).
        `history` False: this reading alone (no jump check, nothing remembered)."""
        q, dq = ctx.q, ctx.dq
        found: list[tuple[str, float]] = []
        with np.errstate(invalid="ignore"):
            finite_q = np.isfinite(q)
            suspect = ~finite_q
            out = (q < self.lo) | (q > self.hi)
            if out.any():
                suspect |= out
                for i in np.flatnonzero(out):
                    lo, hi = self.lo[i] + self.tolerance, self.hi[i] - self.tolerance
                    found.append(self._joint("position", i, q[i], f"is beyond its limits [{lo:.4g}, {hi:.4g}] by more "
                                             f"than {self.tolerance}", max(self.lo[i] - q[i], q[i] - self.hi[i])))
            fast = np.abs(dq) > self.max_speed
            if fast.any():
                ctx.dq = np.where(fast, np.nan, dq)
                for i in np.flatnonzero(fast):
                    found.append(self._joint("velocity", i, dq[i], f"is beyond {self.max_speed[i]:.4g} (the "
                                             "plausible speed)", abs(dq[i]) - self.max_speed[i]))
            # a position that moved further than the plausible speed allows since the last reading
            when = _stamp_or(getattr(ctx.state, "joint_state_stamp", None), ctx.now)
            if history and self._last is not None and math.isfinite(when):
                q0, t0 = self._last
                elapsed = min(max(when - t0, ctx.dt), 1e6) if math.isfinite(t0) else ctx.dt
                allowed = self.max_speed * elapsed + self.tolerance
                jump = np.abs(q - q0) > allowed  # NaN compares False
                if jump.any():
                    suspect |= jump
                    for i in np.flatnonzero(jump):
                        found.append((f"joint_states.position[{self.joint_names[i]}] jumped {q[i] - q0[i]:+.4g} "
                                      f"in {elapsed:.3g} s (plausible at most {allowed[i]:.4g})",
                                      abs(q[i] - q0[i]) - allowed[i]))
            if history and finite_q.all() and not out.any():
                self._last = (q.copy(), when)
        st = ctx.state
        gyro = _finite_floats(getattr(st, "angular_velocity", None), 3)
        if gyro is not None:
            worst = max(map(abs, gyro))
            if worst > self.gyro:
                found.append((f"imu.angular_velocity = {gyro} is beyond {self.gyro} rad/s", worst - self.gyro))
        accel = _finite_floats(getattr(st, "linear_acceleration", None), 3)
        if accel is not None:
            worst = max(map(abs, accel))
            if worst > self.accel:
                found.append((f"imu.linear_acceleration = {accel} is beyond {self.accel} m/s^2", worst - self.accel))
        quat = _finite_floats(getattr(st, "orientation", None), 4)
        if quat is not None:
            s = max(map(abs, quat))
            norm = s * math.hypot(*(c / s for c in quat)) if s > 0 else 0.0
            if abs(norm - 1.0) > self.quat_tolerance:
                found.append((f"imu.orientation has norm {norm:.6g} (a unit quaternion has 1)", abs(norm - 1.0)))
        return found, suspect

    def supervise(self, ctx: StepContext) -> None:
        found, ctx.suspect = self.problems(ctx)
        if found:
            ctx.q = np.where(ctx.suspect, np.nan, ctx.q)
            self.latch("implausible reading: " + summarize([r for r, _ in found]))
        if self._reason is not None:
            ctx.request(self.fault_mode)
            ctx.intervene(self.name, max((e for _, e in found), default=0.0))


def _stamp_or(stamp, default: float) -> float:
    try:
        v = float(stamp)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


# --------------------------------------------------------------------------- 2
class ActionClip(SafetyFilter):
    """Clips the policy's action to the trained range [-1, 1].
    Magnitude: the largest amount an action value was clipped by."""

    name = "action_clip"

    def apply(self, ctx: StepContext) -> None:
        if ctx.behaviour != "policy" or ctx.action is None:
            return
        clipped = np.minimum(np.maximum(ctx.action, -1.0), 1.0)  # np.clip, without its overhead
        if not same_values(clipped, ctx.action):
            largest = np.abs(ctx.action - clipped).max()
            if largest > 0:  # not NaN
                ctx.intervene(self.name, largest)
        ctx.action = clipped


# --------------------------------------------------------------------------- 3
class ActionMap(SafetyFilter):
    """Maps the clipped action to joint targets / forces with the bundle's `ActionMapping`
    (its own `to_command`, the code the training env runs) and blends the policy in over the
    fade-in (weight ``ctx.fade`` from `StartupRamp`).

    absolute: target = anchor + w * (mapped - anchor)   (anchor: the pose when the policy
              took over, the default pose after the startup ramp)
    delta:    target = mapped(w * action, previous target) = previous target + scale * w * action
    force:    force  = w * mapped
    A mapping with bounds (limits minus margin) clips its position targets into them, as in
    training; `PositionLimit` then only acts on what is left (tighter chain limits).
    Actuated joints the mapping does not drive get the default pose (zero force).
    Never intervenes.
    """

    name = "action_map"

    def __init__(self, mapping, index: np.ndarray, default: np.ndarray, position_control: bool):
        self.mapping = mapping
        self.index = index  # actuated-joint index of each mapped joint
        # every actuated joint, in order: the mapped vector is the whole target
        self.all_joints = np.array_equal(index, np.arange(len(default)))
        self.delta = mapping.type == "joint_position_delta"
        self.default = default
        self.position_control = position_control
        mapping.arrays  # the mapping converts its arrays once, here rather than on the first step

    def apply(self, ctx: StepContext) -> None:
        if ctx.behaviour != "policy" or ctx.action is None:
            return
        w = ctx.fade
        to_command = self.mapping.to_command
        if not self.position_control:
            if self.all_joints:
                full = to_command(ctx.action)
            else:
                full = np.zeros(len(ctx.prev))
                full[self.index] = to_command(ctx.action)
            ctx.value = w * full
            return
        if self.delta:
            action = ctx.action if w == 1.0 else w * ctx.action
            if self.all_joints:  # every joint is set from the previous target
                target = to_command(action, ctx.prev)
            else:
                anchor = self.default if ctx.fade_anchor is None else ctx.fade_anchor
                target = anchor + w * (self.default - anchor)
                target[self.index] = to_command(action, ctx.prev[self.index])
        else:
            anchor = self.default if ctx.fade_anchor is None else ctx.fade_anchor
            if self.all_joints:
                full = to_command(ctx.action)
            else:
                full = self.default.copy()
                full[self.index] = to_command(ctx.action)
            target = anchor + w * (full - anchor)
        ctx.value = target


class RateLimit(SafetyFilter):
    """Limits how fast a joint target moves: |target - previous target| <= max_target_rate * dt,
    in every mode (damping, hold, e-stop, the ramp after a reset too): the previous target is
    the last command sent, so this is a property of the command stream, whatever the sensors
    say. Position control only. Magnitude: the largest change removed (rad)."""

    name = "rate_limit"

    def __init__(self, max_rate: np.ndarray):
        self.max_rate = max_rate
        self._per_step = _PerStep(max_rate)

    def apply(self, ctx: StepContext) -> None:
        if not ctx.position_control:
            return
        step = self._per_step(ctx.dt)
        lo, hi = ctx.constrain(PRIO_RATE, ctx.prev - step, ctx.prev + step)
        ctx.clip_to(self.name, lo, hi)


class _PerStep:
    """``limit * dt`` (a per-second limit over one control period), computed once per dt."""

    def __init__(self, limit: np.ndarray):
        self.limit, self.dt, self.value = limit, None, None

    def __call__(self, dt: float) -> np.ndarray:
        if dt != self.dt:
            self.dt, self.value = dt, self.limit * dt
        return self.value


# --------------------------------------------------------------------------- 4
class PositionLimit(SafetyFilter):
    """Keeps targets inside the hardware position limits shrunk by joint_position_margin.
    Absolute: no other filter may move a target out again.
    Force control: a force that pushes a joint at/beyond a limit further out is zeroed.
    Magnitude: the largest distance moved (rad) / force removed."""

    name = "position_limit"

    def __init__(self, lower: np.ndarray, upper: np.ndarray):
        self.lower, self.upper = lower, upper

    def apply(self, ctx: StepContext) -> None:
        if ctx.position_control:
            lo, hi = ctx.constrain(PRIO_POSITION, self.lower, self.upper)
            ctx.clip_to(self.name, lo, hi)
            return
        q, f = ctx.q, ctx.value
        out = np.where(((q >= self.upper) & (f > 0)) | ((q <= self.lower) & (f < 0)), 0.0, f)
        _record_force(ctx, self.name, f, out)


# --------------------------------------------------------------------------- 5
class VelocityLimit(SafetyFilter):
    """Brakes a joint that moves faster than v_max (v_max = velocity_limit * velocity_scale).

    Position control: while dq > v_max the target may not lead the measured position in
    the direction of motion (target <= q; dq < -v_max: target >= q), so the PD brakes the
    joint instead of driving it faster. A bound on the target's distance from the measured
    position would also cap the PD's static effort at kp * v_max * dt: a compliant leg
    (go1: kp 30) could then not carry its own weight. How far a target may lead is the
    torque bound's job, how fast it may move the rate limit's.
    Force control: while |dq| > v_max, a force that speeds the joint up further is zeroed.
    Joints whose measured state is not finite are left alone (the fault is latched anyway).
    Magnitude: the largest distance moved (rad) / force removed."""

    name = "velocity_limit"

    def __init__(self, v_max: np.ndarray):
        self.v_max = v_max

    def apply(self, ctx: StepContext) -> None:
        dq = ctx.dq
        over, under = dq > self.v_max, dq < -self.v_max  # NaN compares False: left alone
        if not (over.any() or under.any()):
            return
        if ctx.position_control:
            q = ctx.q
            finite = np.isfinite(q)
            lo = np.where(under & finite, q, -np.inf)
            hi = np.where(over & finite, q, np.inf)
            lo, hi = ctx.constrain(PRIO_VELOCITY, lo, hi)
            ctx.clip_to(self.name, lo, hi)
            return
        f = ctx.value
        out = np.where((over & (f > 0)) | (under & (f < 0)), 0.0, f)
        _record_force(ctx, self.name, f, out)


# --------------------------------------------------------------------------- 6
class TorqueLimit(SafetyFilter):
    """Bounds the torque the PD will produce: |kp * (target - q) - kd * dq| <= tau_max
    (tau_max = torque_limit * torque_scale).

    `apply` clips the target into the interval q + (kd*dq +- tau_max) / kp where that is
    compatible with the higher-priority bounds (position, rate, velocity), else to the point
    of theirs nearest to it. `bound_gains` (run by the chain on the final target) then, where
    the gains travel with the command, scales kp and kd down where the bound still does not
    hold, so it holds for every output whose measured state is finite; with the robot's
    fixed gains it reports the excess that remains. Force control: |force| <= tau_max.
    Magnitude: the largest target move (rad), force removed, or torque excess (Nm).
    """

    name = "torque_limit"

    def __init__(self, tau_max: np.ndarray):
        self.tau_max = tau_max
        self.neg_tau_max = -tau_max

    def apply(self, ctx: StepContext) -> None:
        if not ctx.position_control:
            f = ctx.value
            _record_force(ctx, self.name, f, np.minimum(np.maximum(f, self.neg_tau_max), self.tau_max))
            return
        kp, kd, q, dq = ctx.kp, ctx.kd, ctx.q, ctx.dq
        with np.errstate(all="ignore"):
            if all_positive(kp) and all_finite(q) and all_finite(dq):  # the usual case: no joint left out
                centre = q + kd * dq / kp
                half = self.tau_max / kp
                lo, hi = centre - half, centre + half
                if not (all_finite(lo) and all_finite(hi)):  # inf - inf: no bound there
                    lo, hi = np.where(np.isnan(lo), -np.inf, lo), np.where(np.isnan(hi), np.inf, hi)
            else:
                ok = np.isfinite(q) & np.isfinite(dq) & (kp > 0)
                safe_kp = np.where(kp > 0, kp, 1.0)
                centre = q + kd * dq / safe_kp
                half = self.tau_max / safe_kp
                lo, hi = centre - half, centre + half
                lo = np.where(ok & ~np.isnan(lo), lo, -np.inf)
                hi = np.where(ok & ~np.isnan(hi), hi, np.inf)
        lo, hi = ctx.constrain(PRIO_TORQUE, lo, hi)
        ctx.clip_to(self.name, lo, hi)

    def bound_gains(self, ctx: StepContext, target: np.ndarray, scale_gains: bool = True) -> None:
        """Scale ctx.kp/kd per joint so the PD torque at `target` is within tau_max (with
        `scale_gains` False, for fixed gains: only report the excess)."""
        with np.errstate(all="ignore"):
            tau = ctx.kp * (target - ctx.q) - ctx.kd * ctx.dq
            within = np.abs(tau) <= self.tau_max
            if all(within.tolist()):  # the usual case
                return
            ok = np.isfinite(ctx.q) & np.isfinite(ctx.dq)
            over = ok & ~within  # NaN (inf - inf) counts as over
            scale = np.where(np.isfinite(tau), self.tau_max / np.abs(tau) * (1 - 1e-12), 0.0)
        if over.any() and not scale_gains:
            excess = np.where(over, np.abs(tau) - self.tau_max, 0.0)
            ctx.intervene(self.name, np.nan_to_num(excess, nan=0.0).max())
            return
        if over.any():
            s = np.where(over, scale, 1.0)
            kp, kd = ctx.kp * s, ctx.kd * s
            with np.errstate(all="ignore"):  # absurd magnitudes can round past the bound: no gains then
                still = ok & ~(np.abs(kp * (target - ctx.q) - kd * ctx.dq) <= self.tau_max)
            ctx.kp, ctx.kd = np.where(still, 0.0, kp), np.where(still, 0.0, kd)
            excess = np.where(over, np.abs(tau) - self.tau_max, 0.0)
            ctx.intervene(self.name, np.nan_to_num(excess, nan=0.0).max())


# --------------------------------------------------------------------------- 7
class WorkspaceLimit(SafetyFilter):
    """Keeps a manipulator's end-effector site inside [workspace_min, workspace_max].

    Forward kinematics of the *target* joint positions on the robot's own MuJoCo model
    (`mj_kinematics` on one MjData). A target outside the box is backed off along the
    segment from a safe anchor to the target (bisection, keeping the furthest point that
    is no further outside the box than the anchor). Anchors, first inside the box wins:
    the measured pose and the previous target, each clipped into the feasible interval of
    the earlier filters (position, rate, velocity, torque). So the result keeps every one of
    those bounds, and is inside the box whenever one of the anchors is: the box gives way
    only to the torque and velocity bounds, and then only towards where the robot actually
    is (a robot pushed out of the box is not fought with more torque than the bound).
    Magnitude: the largest joint move (rad).

    Cost: one `mj_kinematics` per step (none if the target is the one checked last), and
    one per bisection step while backing off.
    """

    name = "workspace"

    def __init__(self, model, site: str, joint_names: Sequence[str], box_min, box_max, iterations: int = 16):
        import mujoco

        self._mujoco = mujoco
        self.model = model
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site < 0:
            raise ValueError(f"site {site!r} not in the model")
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in joint_names]
        self.qpos_adr = np.array([model.jnt_qposadr[i] for i in ids], dtype=int)
        first = int(self.qpos_adr[0]) if len(self.qpos_adr) else 0
        if np.array_equal(self.qpos_adr, np.arange(first, first + len(self.qpos_adr))):  # contiguous: a slice
            self._qpos_index = slice(first, first + len(self.qpos_adr))
        else:
            self._qpos_index = self.qpos_adr
        self.box_min = np.asarray(box_min, dtype=np.float64)
        self.box_max = np.asarray(box_max, dtype=np.float64)
        self._box = (self.box_min.tolist(), self.box_max.tolist())
        self.iterations = iterations
        self._new_data()

    def _new_data(self) -> None:
        """A fresh MjData (qpos = qpos0, which only the arm's entries ever leave) and views into it."""
        self.data = self._mujoco.MjData(self.model)
        self._qpos, self._site_xpos = self.data.qpos, self.data.site_xpos
        self._last: tuple[bytes, float] | None = None  # (joints, outside) of the last check

    def __deepcopy__(self, memo):
        """Copies share the (read-only) model and get their own MjData."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._new_data()
        memo[id(self)] = new
        return new

    def _kinematics(self, joints: np.ndarray) -> None:
        self._qpos[self._qpos_index] = joints
        self._mujoco.mj_kinematics(self.model, self.data)

    def end_effector(self, joints: np.ndarray) -> np.ndarray:
        self._kinematics(joints)
        return self._site_xpos[self.site].copy()

    def outside(self, joints: np.ndarray) -> float:
        """How far (m, max over axes) the end-effector is outside the box; 0 inside."""
        key = np.asarray(joints, dtype=np.float64).tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        self._kinematics(joints)
        p = self._site_xpos[self.site]
        x, y, z = p.tolist()
        (x0, y0, z0), (x1, y1, z1) = self._box
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
            v = max(0.0, max(x0 - x, y0 - y, z0 - z), max(x - x1, y - y1, z - z1))
        else:  # NaN: as numpy's max propagates it
            v = float(max(0.0, (self.box_min - p).max(), (p - self.box_max).max()))
        self._last = (key, v)
        return v

    def apply(self, ctx: StepContext) -> None:
        if not ctx.position_control or ctx.behaviour == "damping":
            return
        target = ctx.value
        outside = self.outside(target)
        if outside == 0.0:
            return
        flo, fhi = ctx.feasible()
        candidates = []
        if all_finite(ctx.q):
            candidates.append(np.clip(ctx.q, flo, fhi))
        candidates.append(np.clip(ctx.prev, flo, fhi))
        anchor, worst = None, math.inf
        for c in candidates:
            v = self.outside(c)
            if v < worst:
                anchor, worst = c, v
            if v == 0.0:
                break
        if outside <= worst:
            return
        good, bad = 0.0, 1.0
        towards = target - anchor
        for _ in range(self.iterations):
            mid = 0.5 * (good + bad)
            if self.outside(anchor + mid * towards) <= worst:
                good = mid
            else:
                bad = mid
        new = anchor + good * towards
        ctx.intervene(self.name, np.abs(new - target).max())
        ctx.value = new


# --------------------------------------------------------------------------- 8
class TiltGuard(LatchingFilter):
    """Fall detection: |roll| or |pitch| of the base beyond tilt_limit latches damping
    until `reset`. Reads `state.gravity` or `state.orientation`.
    Magnitude: rad beyond the limit (0 while only latched)."""

    name = "tilt"

    def __init__(self, tilt_limit: float):
        self.tilt_limit = tilt_limit

    def tilt(self, state) -> float | None:
        g = projected_gravity(state)
        if g is None:
            return None
        roll, pitch = roll_pitch(g)
        return max(abs(roll), abs(pitch))

    def supervise(self, ctx: StepContext) -> None:
        g = ctx.gravity(gravity_direction)
        tilt = None
        if g is not None:
            roll, pitch = roll_pitch(g)
            tilt = max(abs(roll), abs(pitch))
        beyond = 0.0
        if tilt is not None and tilt > self.tilt_limit:
            beyond = tilt - self.tilt_limit
            self.latch(f"base tilt {tilt:.3f} rad beyond tilt_limit {self.tilt_limit} rad")
        if self._reason is not None:
            ctx.request("damping")
            ctx.intervene(self.name, beyond)


# --------------------------------------------------------------------------- 9
class Watchdog(LatchingFilter):
    """Stale inputs make the robot safe.

    - Joint states (and IMU, where a timeout is configured) older than their timeout latch
      the fault mode (hold for arms, damping for quadrupeds) until `reset`.
    - A stale command (cmd_vel / goal; only for robots with such a topic) is not latched:
      the robot holds (arms: the last safe target; quadrupeds: the default standing pose)
      until commands come back, then the policy fades in again. Holding, rather than
      feeding the policy a zero command, keeps this decision inside the chain.

    A stamp of None (never received), non-finite, or in the future by more than the
    timeout (clock mismatch) counts as stale. The check is ``now - stamp > timeout`` on
    every step, so it trips on the first step after the timeout: within one control
    period, provided the node calls `step` on a timer rather than on message arrival.
    Magnitude: seconds past the timeout (0 for a message never received).
    """

    name = "watchdog"

    _STAMPS = {"joint_states": "joint_state_stamp", "imu": "imu_stamp"}

    def __init__(self, fault_mode: str, joint_states: float, imu: float | None, command: float | None):
        self.fault_mode = fault_mode
        self.timeouts = {"joint_states": joint_states, "imu": imu}
        self.command_timeout = command

    @staticmethod
    def age(stamp, now: float, timeout: float) -> float:
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return math.inf
        if not (math.isfinite(stamp) and math.isfinite(now)) or stamp - now > timeout:
            return math.inf
        return now - stamp

    def supervise(self, ctx: StepContext) -> None:
        st = ctx.state
        beyond, stale = 0.0, []
        for key, timeout in self.timeouts.items():
            if timeout is None:
                continue
            age = self.age(getattr(st, self._STAMPS[key], None), ctx.now, timeout)
            if age > timeout:
                stale.append(key)
                beyond = max(beyond, age - timeout if math.isfinite(age) else 0.0)
        if stale:
            self.latch(f"stale {' and '.join(stale)} at t={ctx.now}")
        tripped = self._reason is not None
        if tripped:
            ctx.request(self.fault_mode)
        if self.command_timeout is not None:
            age = self.age(getattr(st, "command_stamp", None), ctx.now, self.command_timeout)
            if age > self.command_timeout:
                tripped = True
                ctx.request("soft_hold")
                beyond = max(beyond, age - self.command_timeout if math.isfinite(age) else 0.0)
        if tripped:
            ctx.intervene(self.name, beyond)


# --------------------------------------------------------------------------- 10
class EStop(SafetyFilter):
    """Emergency stop: latched by `trigger(reason)`; only `clear()` (SafetyChain.release_estop)
    releases it, never `reset`. Behaves as the spec's fault mode, reported as "estop"."""

    name = "estop"

    def __init__(self):
        self._reason: str | None = None

    @property
    def latched(self) -> str | None:
        return self._reason

    def trigger(self, reason: str = "e-stop") -> None:
        if self._reason is None:
            self._reason = str(reason) or "e-stop"

    def clear(self) -> None:
        self._reason = None

    def supervise(self, ctx: StepContext) -> None:
        if self._reason is not None:
            ctx.request("estop")
            ctx.intervene(self.name, 1.0)


class StartupRamp(SafetyFilter):
    """Startup ramp and fade-in: how the policy takes over.

    After `restart` the target moves linearly from where it starts to the default pose
    (clipped into the position limits) over max(startup_ramp_time, the time the rate and
    velocity limits need); the policy takes over once the time is up *and* the previous
    target is the default pose. It starts from the measured pose only before the chain's
    first command; after that (a reset, an e-stop release) from the last command, so a
    reset never makes the command jump. Then the policy's targets are blended in over
    fade_in_time (weight 0 -> 1, see `ActionMap`); the fade also restarts whenever the
    policy resumes after a (non-latched) hold. Force control: zero force during the ramp,
    then the force fades in. Magnitude: the fraction of the policy withheld (1 during the ramp).
    """

    name = "startup_ramp"

    def __init__(self, ramp_time: float, fade_time: float, end: np.ndarray | None, speed: np.ndarray | None,
                 lower: np.ndarray | None, upper: np.ndarray | None):
        self.ramp_time, self.fade_time = ramp_time, fade_time
        self.end, self.speed, self.lower, self.upper = end, speed, lower, upper
        self.phase = "pending"  # pending -> ramp -> policy
        self.start: np.ndarray | None = None
        self.t0 = 0.0
        self.duration = 0.0
        self.fade_start = 0.0
        self.fade_anchor: np.ndarray | None = None
        self.from_measured = True  # the chain clears it once it has sent a command

    def restart(self, start: np.ndarray | None = None, now: float | None = None) -> None:
        """Begin the ramp from `start` at `now`, or at the next step (see `start_pose`)."""
        if start is None or now is None or not math.isfinite(now):
            self.phase = "pending"
            return
        self.phase, self.t0 = "ramp", float(now)
        if self.end is None:  # force control
            self.start, self.duration = None, self.ramp_time
            return
        self.start = np.asarray(start, dtype=np.float64).copy()
        need = np.max(np.abs(self.end - self.start) / self.speed) if len(self.end) else 0.0
        self.duration = max(self.ramp_time, float(need))

    def start_pose(self, ctx: StepContext) -> np.ndarray:
        """The last command once there is one; before: the measured pose clipped into the
        limits (the last target where it is not finite)."""
        if self.end is None or not self.from_measured:
            return ctx.prev
        return np.where(np.isfinite(ctx.q), np.clip(ctx.q, self.lower, self.upper), ctx.prev)

    def target(self, now: float) -> np.ndarray:
        if self.duration <= 0 or not math.isfinite(now):
            alpha = 1.0 if self.duration <= 0 else 0.0
        else:
            alpha = min(1.0, max(0.0, (now - self.t0) / self.duration))
        return self.start + alpha * (self.end - self.start)

    def supervise(self, ctx: StepContext) -> None:
        if self.phase == "pending" and math.isfinite(ctx.now):
            start = self.start_pose(ctx)
            self.restart(start, ctx.now)
            if self.end is not None:
                ctx.prev = start.copy()  # the rate limit continues from the measured pose
            ctx.prev_behaviour = "ramp"
        if self.phase != "policy":
            elapsed = ctx.now - self.t0
            reached = self.end is None or bool(np.all(np.abs(ctx.prev - self.end) <= 1e-9))
            if not (elapsed >= self.duration and reached):
                ctx.request("startup_ramp")
                ctx.intervene(self.name, 1.0)
                return
            self.phase = "policy"
        if ctx.rank > 0:  # something else holds the robot: no policy this step
            return
        if ctx.prev_behaviour != "policy":
            self.fade_start, self.fade_anchor = ctx.now, ctx.prev.copy()
        w = 1.0
        if self.fade_time > 0:
            w = min(1.0, max(0.0, (ctx.now - self.fade_start) / self.fade_time))
        ctx.fade, ctx.fade_anchor = w, self.fade_anchor
        if w < 1.0:
            ctx.intervene(self.name, 1.0 - w)


def _record_force(ctx: StepContext, name: str, before: np.ndarray, after: np.ndarray) -> None:
    # a non-finite force counts as moved (by inf) even where it is left as it is
    if not (all_finite(before) and same_values(after, before)):
        with np.errstate(all="ignore"):
            moved = np.abs(after - before)
        largest = np.where(np.isnan(moved), np.inf, moved).max()
        if largest > 0:
            ctx.intervene(name, largest)
    ctx.value = after
