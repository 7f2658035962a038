"""The chain's guards: they decide the mode (fault, damping, hold, e-stop), not the target.

Non-finite and implausible readings, tilt and stale inputs latch a safe mode until
`SafetyChain.reset`; the e-stop is latched until `SafetyChain.release_estop`. How the
two passes (supervise, apply) and the registry work: `roboreal.sim2real.safety.base`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from roboreal.sim2real.safety.base import LatchingFilter, SafetyFilter, register, summarize
from roboreal.sim2real.safety.geometry import as_vector, finite_floats, gravity_direction, roll_pitch
from roboreal.sim2real.safety.types import StepContext, all_finite

if TYPE_CHECKING:
    from roboreal.sim2real.safety.chain import SafetyChain


def _count_non_finite(v: np.ndarray) -> int:
    return 0 if all_finite(v) else int((~np.isfinite(v)).sum())


@register
class NonFiniteGuard(LatchingFilter):
    """NaN/inf (or a wrong shape) in the action, the measured state or the clock latches
    the spec's fault mode (hold for arms, damping for quadrupeds) until `reset`.

    Checked: the action, joint positions and velocities (all joints given), the clock
    `now`, and where a tilt limit is configured, a usable orientation or gravity vector.
    Magnitude: how many bad values this step (0 while only latched).
    """

    name = "non_finite"
    order = 10

    def __init__(self, fault_mode: str, action_size: int, n_joints: int, n_actuated: int,
                 needs_orientation: bool):
        self.fault_mode = fault_mode
        self.action_size = action_size
        self.lengths = tuple(sorted({n_joints, n_actuated}))
        self.needs_orientation = needs_orientation

    @classmethod
    def build(cls, chain: SafetyChain) -> NonFiniteGuard:
        return cls(chain.fault_mode, chain.mapping.size, len(chain.spec.joints), chain.n,
                   needs_orientation=chain.limits.tilt_limit is not None)

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


@register
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
    order = 20
    enforces = ("plausibility.position_tolerance", "plausibility.velocity_factor", "plausibility.angular_velocity",
                "plausibility.linear_acceleration", "plausibility.quaternion_norm_tolerance")

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

    @classmethod
    def build(cls, chain: SafetyChain) -> PlausibilityGuard:
        spec = chain.spec
        return cls(chain.fault_mode, chain.joint_names, spec.lower, spec.upper, spec.array("velocity_limit"),
                   chain.limits.plausibility)

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
        gyro = finite_floats(getattr(st, "angular_velocity", None), 3)
        if gyro is not None:
            worst = max(map(abs, gyro))
            if worst > self.gyro:
                found.append((f"imu.angular_velocity = {gyro} is beyond {self.gyro} rad/s", worst - self.gyro))
        accel = finite_floats(getattr(st, "linear_acceleration", None), 3)
        if accel is not None:
            worst = max(map(abs, accel))
            if worst > self.accel:
                found.append((f"imu.linear_acceleration = {accel} is beyond {self.accel} m/s^2", worst - self.accel))
        quat = finite_floats(getattr(st, "orientation", None), 4)
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


@register
class TiltGuard(LatchingFilter):
    """Fall detection: |roll| or |pitch| of the base beyond tilt_limit latches damping
    until `reset`. Reads `state.gravity` or `state.orientation`.
    Magnitude: rad beyond the limit (0 while only latched)."""

    name = "tilt"
    order = 100
    enforces = ("tilt_limit",)

    def __init__(self, tilt_limit: float):
        self.tilt_limit = tilt_limit

    @classmethod
    def build(cls, chain: SafetyChain) -> TiltGuard | None:
        tilt_limit = chain.limits.tilt_limit
        return None if tilt_limit is None else cls(tilt_limit)

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


@register
class Watchdog(LatchingFilter):
    """Stale inputs make the robot safe.

    - Joint states (and IMU, where a timeout is configured) older than their timeout latch
      the fault mode (hold for arms, damping for quadrupeds) until `reset`.
    - A stale command (cmd_vel / goal; only for robots with such a topic) is not latched:
      the robot holds (the last safe target; a robot that stands on feet: its default pose,
      `RobotSpec.stands_without_command`) until commands come back, then the policy fades
      in again. Holding, rather than feeding the policy a zero command, keeps this decision
      inside the chain.

    A stamp of None (never received), non-finite, or in the future by more than the
    timeout (clock mismatch) counts as stale. The check is ``now - stamp > timeout`` on
    every step, so it trips on the first step after the timeout: within one control
    period, provided the node calls `step` on a timer rather than on message arrival.
    Magnitude: seconds past the timeout (0 for a message never received).
    """

    name = "watchdog"
    order = 110
    # future_stamp: the node screens each header stamp with it on arrival
    # (`roboreal.sim2real.nodes.timing.StampTracker`), before the watchdog ages it
    enforces = ("watchdog.joint_states", "watchdog.imu", "watchdog.command", "watchdog.future_stamp")

    _STAMPS = {"joint_states": "joint_state_stamp", "imu": "imu_stamp"}

    def __init__(self, fault_mode: str, joint_states: float, imu: float | None, command: float | None):
        self.fault_mode = fault_mode
        self.timeouts = {"joint_states": joint_states, "imu": imu}
        self.command_timeout = command

    @classmethod
    def build(cls, chain: SafetyChain) -> Watchdog:
        wd = chain.limits.watchdog
        # no command topic declared: nothing to go stale
        return cls(chain.fault_mode, wd.joint_states, wd.imu, wd.command if chain.spec.command_inputs else None)

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


@register
class EStop(SafetyFilter):
    """Emergency stop: latched by `trigger(reason)`; only `clear()` (SafetyChain.release_estop)
    releases it, never `reset`. Behaves as the spec's fault mode, reported as "estop"."""

    name = "estop"
    order = 120

    def __init__(self):
        self._reason: str | None = None

    @classmethod
    def build(cls, chain: SafetyChain) -> EStop:
        return cls()

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
