"""The chain's target shaping: from the policy's action to joint targets (or forces) inside
every joint limit, and the startup ramp that hands the robot over to the policy.

How the two passes (supervise, apply), the constraint priorities and the registry work:
`roboreal.sim2real.safety.base`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from roboreal.sim2real.safety.base import SafetyFilter, register
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

if TYPE_CHECKING:
    from roboreal.sim2real.safety.chain import SafetyChain


@register
class ActionClip(SafetyFilter):
    """Clips the policy's action to the trained range [-1, 1].
    Magnitude: the largest amount an action value was clipped by."""

    name = "action_clip"
    order = 30

    @classmethod
    def build(cls, chain: SafetyChain) -> ActionClip:
        return cls()

    def apply(self, ctx: StepContext) -> None:
        if ctx.behaviour != "policy" or ctx.action is None:
            return
        clipped = np.minimum(np.maximum(ctx.action, -1.0), 1.0)  # np.clip, without its overhead
        if not same_values(clipped, ctx.action):
            largest = np.abs(ctx.action - clipped).max()
            if largest > 0:  # not NaN
                ctx.intervene(self.name, largest)
        ctx.action = clipped


@register
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
    order = 40

    def __init__(self, mapping, index: np.ndarray, default: np.ndarray, position_control: bool):
        self.mapping = mapping
        self.index = index  # actuated-joint index of each mapped joint
        # every actuated joint, in order: the mapped vector is the whole target
        self.all_joints = np.array_equal(index, np.arange(len(default)))
        self.delta = mapping.type == "joint_position_delta"
        self.default = default
        self.position_control = position_control
        mapping.arrays  # the mapping converts its arrays once, here rather than on the first step

    @classmethod
    def build(cls, chain: SafetyChain) -> ActionMap:
        index = np.array([chain.joint_names.index(j) for j in chain.mapping.joints], dtype=int)
        return cls(chain.mapping, index, chain.default, chain.position_control)

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


@register
class RateLimit(SafetyFilter):
    """Limits how fast a joint target moves: |target - previous target| <= max_target_rate * dt,
    in every mode (damping, hold, e-stop, the ramp after a reset too): the previous target is
    the last command sent, so this is a property of the command stream, whatever the sensors
    say. Position control only. Magnitude: the largest change removed (rad)."""

    name = "rate_limit"
    order = 50
    enforces = ("max_target_rate",)

    def __init__(self, max_rate: np.ndarray):
        self.max_rate = max_rate
        self._per_step = _PerStep(max_rate)

    @classmethod
    def build(cls, chain: SafetyChain) -> RateLimit:
        return cls(chain.max_rate)

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


@register
class PositionLimit(SafetyFilter):
    """Keeps targets inside the hardware position limits shrunk by joint_position_margin.
    Absolute: no other filter may move a target out again.
    Force control: a force that pushes a joint at/beyond a limit further out is zeroed.
    Magnitude: the largest distance moved (rad) / force removed."""

    name = "position_limit"
    order = 60
    enforces = ("joint_position_margin",)

    def __init__(self, lower: np.ndarray, upper: np.ndarray):
        self.lower, self.upper = lower, upper

    @classmethod
    def build(cls, chain: SafetyChain) -> PositionLimit:
        return cls(chain.lower, chain.upper)

    def apply(self, ctx: StepContext) -> None:
        if ctx.position_control:
            lo, hi = ctx.constrain(PRIO_POSITION, self.lower, self.upper)
            ctx.clip_to(self.name, lo, hi)
            return
        q, f = ctx.q, ctx.value
        out = np.where(((q >= self.upper) & (f > 0)) | ((q <= self.lower) & (f < 0)), 0.0, f)
        _record_force(ctx, self.name, f, out)


@register
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
    order = 70
    enforces = ("velocity_scale",)

    def __init__(self, v_max: np.ndarray):
        self.v_max = v_max

    @classmethod
    def build(cls, chain: SafetyChain) -> VelocityLimit:
        return cls(chain.v_max)

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


@register
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
    order = 80
    enforces = ("torque_scale",)

    def __init__(self, tau_max: np.ndarray):
        self.tau_max = tau_max
        self.neg_tau_max = -tau_max

    @classmethod
    def build(cls, chain: SafetyChain) -> TorqueLimit:
        return cls(chain.tau_max)

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


@register
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
    order = 130  # last: it hands over to the policy only if no other filter holds the robot (`ctx.rank`)
    enforces = ("startup_ramp_time", "fade_in_time")

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

    @classmethod
    def build(cls, chain: SafetyChain) -> StartupRamp:
        limits, position = chain.limits, chain.position_control
        return cls(limits.startup_ramp_time, limits.fade_in_time, end=chain.default if position else None,
                   speed=0.9 * np.minimum(chain.max_rate, chain.v_max) if position else None,
                   lower=chain.lower, upper=chain.upper)

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