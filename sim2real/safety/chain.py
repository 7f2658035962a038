"""`SafetyChain`: the ordered filters between a policy and a real robot.

The filters are the registered ones (`roboreal.sim2real.safety.base.register`), built for
the robot in their declared order; the chain maps each step's mode to where the target
comes from and clips the final command."""

from __future__ import annotations

import math

import numpy as np

from roboreal.config import ConfigError
from roboreal.robots.spec import RobotSpec
from roboreal.control.action import ActionMapping, GripperMapping
from roboreal.sim2real.safety.base import SafetyFilter, registered_filters, summarize
from roboreal.sim2real.safety.geometry import as_vector
from roboreal.sim2real.safety.guards import EStop
from roboreal.sim2real.safety.joint_limits import StartupRamp, TorqueLimit
from roboreal.sim2real.safety.limits import SafetyLimits
from roboreal.sim2real.safety.types import _BIG, RobotState, SafetyCommand, StepContext, all_finite, same_values

FINAL_GUARD = "final_guard"
GRIPPER = "gripper"  # the gripper command's own limit (`SafetyChain.gripper`)
# mode -> behaviour where they differ (see `SafetyChain._choose_source`)
_BEHAVIOUR = {"soft_hold": "hold", "startup_ramp": "ramp"}


class SafetyChain:
    """Ordered safety filters, configured from a `RobotSpec` (and optional tighter limits).

    >>> chain = SafetyChain(spec, mapping, dt=0.02)
    >>> chain.reset(state, now)               # clears faults, restarts the ramp (from the last command)
    >>> cmd = chain.step(action, state, now)  # every control period
    >>> chain.estop("operator"); chain.release_estop(state, now)

    Guarantees of every command, for any action / state / time (NaN, inf, huge values,
    wrong shapes), in every mode and across resets and e-stop releases: it is finite;
    position targets are within the position limits shrunk by the margin and within
    max_target_rate * dt of the previous command (the first command starts at the measured
    pose); forces are within the torque bound. Wherever those two allow and the measured
    state is finite: a joint faster than v_max gets no target leading it further in its
    direction of motion, and the PD torque |kp*(target - q) - kd*dq| is within the torque
    bound; with `gains="commanded"` (they travel with the command) the gains are then
    scaled down so that the torque bound holds for every finite state; with the robot's
    fixed gains the target is the point nearest to the torque bound. On a manipulator with
    a workspace box, the target is inside the box whenever the previous target or the
    measured pose, clipped into all the bounds above, is. Damping follows the measured position (rate-limited;
    the last target for joints whose reading is implausible) with, for commanded gains,
    kp = 0 and kd = damping_kd.
    """

    # the safety limit the chain itself enforces (`why_not_still`); the others belong to its filters
    enforces = ("reset_max_joint_speed",)

    def __init__(self, spec: RobotSpec, mapping: ActionMapping, dt: float, limits: SafetyLimits | None = None,
                 gains: str | None = None):
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (math.isfinite(dt) and dt > 0):
            raise ConfigError("dt", f"control period must be a positive finite number, got {dt!r}")
        self.spec, self.mapping, self.dt = spec, mapping, float(dt)
        base = SafetyLimits.from_spec(spec)
        if limits is None:
            limits = base
        limits.check_within(base)
        self.limits = limits
        self.position_control = spec.control_mode == "position"
        if gains is None:
            gains = "commanded" if spec.ros.command_interface == "position_gains" else "fixed"
        if gains not in ("fixed", "commanded"):
            raise ConfigError("gains", f"expected fixed or commanded, got {gains!r}")
        if gains == "commanded" and not self.position_control:
            raise ConfigError("gains", f"commanded gains need a position-controlled robot; {spec.name} is "
                              f"{spec.control_mode}-controlled")
        # fixed: the robot applies robot.yaml's kp/kd whatever the chain says (a position
        # interface); commanded: the gains travel with each command, so the chain may set them
        self.gains = gains
        self._check_mapping(spec, mapping)

        act = spec.actuated_joints
        self.joint_names = tuple(j.name for j in act)
        self.n = len(act)
        m = limits.joint_position_margin
        for j in act:
            if j.position_limits[1] - j.position_limits[0] <= 2 * m:
                raise ConfigError("safety.joint_position_margin", f"{m} leaves no range for joint {j.name!r}")
        self.lower = spec.lower + m
        self.upper = spec.upper - m
        self.default = np.clip(spec.array("default"), self.lower, self.upper)
        self.v_max = spec.array("velocity_limit") * limits.velocity_scale
        self.tau_max = spec.array("torque_limit") * limits.torque_scale
        self.max_rate = np.full(self.n, limits.max_target_rate)
        if self.position_control:
            self.kp = spec.array("kp").astype(np.float64)
            self.kd = spec.array("kd").astype(np.float64)
        else:
            self.kp = self.kd = np.zeros(self.n)
        self.fault_mode = spec.safety.fault_mode
        self.damping_kd = float(spec.safety.damping_kd)
        self._all_index = np.array([i for i, j in enumerate(spec.joints) if j.actuated], dtype=int)
        self._lengths = (len(spec.joints), self.n)  # a measured vector has one of these lengths
        self._unknown = np.full(self.n, np.nan)  # what a missing measurement reads as
        self._neg_tau_max = -self.tau_max

        # ----- the chain: every registered filter that applies to this robot, in order -----
        built = (cls.build(self) for cls in registered_filters())
        self.filters: tuple[SafetyFilter, ...] = tuple(f for f in built if f is not None)
        # the filters the chain itself calls into
        self.torque: TorqueLimit = self.filter("torque_limit")
        self.ramp: StartupRamp = self.filter("startup_ramp")
        self._estop: EStop = self.filter("estop")
        self._report = {name: {"count": 0, "last_time": None, "max_magnitude": 0.0}
                        for name in [f.name for f in self.filters] + [FINAL_GUARD]}
        g = spec.gripper
        self.gripper_range = (min(g.open, g.closed), max(g.open, g.closed)) if g is not None else None
        if g is not None:
            self._report[GRIPPER] = {"count": 0, "last_time": None, "max_magnitude": 0.0}
        self._prev = self.default.copy() if self.position_control else np.zeros(self.n)
        self._prev_behaviour = "ramp"
        self.mode = "startup_ramp"

    @staticmethod
    def _check_mapping(spec: RobotSpec, mapping: ActionMapping) -> None:
        force = spec.control_mode == "force"
        if (mapping.type == "force") != force:
            raise ConfigError("action_mapping.type",
                              f"{mapping.type!r} does not fit a {spec.control_mode}-controlled robot")
        names = spec.actuated_names
        seen = set()
        for i, j in enumerate(mapping.joints):
            if j not in names:
                raise ConfigError(f"action_mapping.joints[{i}]", f"{j!r} is not an actuated joint of {spec.name} "
                                  f"({names})")
            if j in seen:
                raise ConfigError(f"action_mapping.joints[{i}]", f"duplicate joint {j!r}")
            seen.add(j)
        for key in ("scale", "offset"):
            for i, v in enumerate(getattr(mapping, key)):
                if not math.isfinite(v):
                    raise ConfigError(f"action_mapping.{key}[{i}]", f"must be finite, got {v}")

    # ------------------------------------------------------------------ control
    def reset(self, state: RobotState | None = None, now: float | None = None) -> None:
        """Clear latched faults (non-finite, plausibility, tilt, watchdog; NOT the e-stop) and
        restart the startup ramp at `now` (or, without a usable `state` and `now`, at the next
        step). The ramp starts from the last command; before the first command, from the
        measured pose of `state`."""
        for f in self.filters:
            f.reset()
        self._restart_ramp(state, now)

    def _restart_ramp(self, state, now) -> None:
        q = self._measured(state)[0]
        start = None
        usable = state is not None and now is not None and isinstance(now, (int, float)) and math.isfinite(now)
        if not self.ramp.from_measured:  # a command was sent: the ramp continues from it
            start = self._prev.copy() if usable else None
        elif usable and np.isfinite(q).all():
            start = np.clip(q, self.lower, self.upper) if self.position_control else self._prev * 0.0
            self._prev = start.copy()
        elif self.position_control:
            # the ramp starts at the next step (StartupRamp.start_pose); anchor on what is measured
            # now, so the last command the chain reports is the reference that step is held to
            self._prev = np.where(np.isfinite(q), np.clip(q, self.lower, self.upper), self._prev)
        self.ramp.restart(start, now)
        self._prev_behaviour = "ramp"

    def estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: every following command is "estop" until `release_estop`."""
        self._estop.trigger(reason)

    def release_estop(self, state: RobotState | None = None, now: float | None = None) -> None:
        """Release the e-stop (only this does) and restart the startup ramp from the last
        command. Other latched faults stay latched: `reset` clears those."""
        was = self._estop.latched is not None
        self._estop.clear()
        if was:
            self._restart_ramp(state, now)

    def check_state(self, state: RobotState | None, now: float) -> list[str]:
        """Why `state` is not a reading to start the robot from: the non-finite and implausible
        values the chain would latch a fault for ([] if there are none). Latches nothing."""
        non_finite, implausible = self._screen(state, now)
        return non_finite + implausible

    def screen(self, state: RobotState | None, now: float) -> list[str]:
        """Check a reading the moment it arrives, between steps: non-finite or implausible
        values latch the fault mode now (reason: "on arrival: ..."), so a bad sample is caught
        even if a good one replaces it before the next step. Returns the reasons ([] if fine)."""
        non_finite, implausible = self._screen(state, now)
        for name, reasons in (("non_finite", non_finite), ("plausibility", implausible)):
            if reasons:
                self.filter(name).latch("on arrival: " + summarize(reasons))
        return non_finite + implausible

    def why_not_still(self, state: RobotState | None) -> str | None:
        """Why a reset or an e-stop release must wait: an actuated joint moves faster than
        safety.reset_max_joint_speed, or its speed is unknown. None: the robot is still."""
        dq = self._measured(state)[1]
        limit = self.limits.reset_max_joint_speed
        with np.errstate(invalid="ignore"):
            moving = ~(np.abs(dq) <= limit)  # NaN: unknown, counts as moving
        if not moving.any():
            return None
        i = int(np.flatnonzero(moving)[0])
        return (f"joint {self.joint_names[i]} moves at {dq[i]:.3g} rad/s (a reset waits until every joint is "
                f"below safety.reset_max_joint_speed = {limit} rad/s)")

    def _screen(self, state, now) -> tuple[list[str], list[str]]:
        ctx = self._context(np.zeros(self.mapping.size), state, now)
        _, non_finite = self.filter("non_finite").problems(ctx)
        found, _ = self.filter("plausibility").problems(ctx, history=False)
        return non_finite, [reason for reason, _ in found]

    @property
    def previous_command(self) -> np.ndarray:
        """The values the next command is rate-limited against: the last command, or before
        the first one the measured pose the ramp starts from (a copy)."""
        return self._prev.copy()

    @property
    def faults(self) -> dict[str, str]:
        """Latched states holding the robot safe: filter name -> reason."""
        return {f.name: f.latched for f in self.filters if f.latched is not None}

    def filter(self, name: str) -> SafetyFilter:
        for f in self.filters:
            if f.name == name:
                return f
        raise KeyError(f"no filter {name!r} (have {[f.name for f in self.filters]})")

    def step(self, action, state: RobotState | None, now: float) -> SafetyCommand:
        """One control step. See the class docstring for what the output guarantees."""
        ctx = self._context(action, state, now)
        for f in self.filters:
            f.supervise(ctx)
        self._choose_source(ctx)
        for f in self.filters:
            f.apply(ctx)
        return self._finish(ctx)

    def gripper(self, action, now: float | None = None) -> float | None:
        """The gripper opening (m) for a normalized gripper action (-1 closed .. +1 open), or
        None: send nothing, the gripper keeps its last command.

        Only while the last `step` ran the policy (mode "policy"): during the startup ramp,
        holds, damping and e-stops the gripper is left as it is (opening it could drop what
        it holds). A value that is not a finite number gives None; one outside [-1, 1] is
        clipped. Both count as interventions of "gripper". The result is always finite and
        within [closed, open]."""
        if self.gripper_range is None:
            raise ValueError(f"robot {self.spec.name!r} has no gripper")
        if self.mode != "policy":
            return None
        try:
            a = float(action)
        except (TypeError, ValueError, OverflowError):
            a = math.nan
        t = float(now) if isinstance(now, (int, float)) and math.isfinite(now) else None
        if not math.isfinite(a):
            self._count(GRIPPER, _BIG, t)
            return None
        if abs(a) > 1.0:
            self._count(GRIPPER, abs(a) - 1.0, t)
            a = 1.0 if a > 0 else -1.0
        width = GripperMapping.for_robot(self.spec).to_command(a)  # the training env's mapping
        lo, hi = self.gripper_range
        return min(hi, max(lo, width))

    def _count(self, name: str, magnitude: float, when: float | None) -> None:
        """One intervention of `name` (finite magnitude) at `when` (None: no finite time)."""
        r = self._report[name]
        r["count"] += 1
        r["last_time"] = when
        r["max_magnitude"] = max(r["max_magnitude"], magnitude)

    def report(self) -> dict[str, dict]:
        """Per filter: {"count": steps intervened, "last_time": now of the last one,
        "max_magnitude": largest magnitude}. "final_guard" should stay at 0: it counts
        outputs the filters left out of bounds (a bug) that the last clip caught."""
        return {k: dict(v) for k, v in self._report.items()}

    # ------------------------------------------------------------------ internals
    def _measured(self, state) -> tuple[np.ndarray, np.ndarray]:
        return self._actuated(getattr(state, "position", None)), self._actuated(getattr(state, "velocity", None))

    def _actuated(self, raw) -> np.ndarray:
        """A measured vector (all joints or the actuated ones) as the actuated joints' values
        (a copy), NaN where it is unusable."""
        v = as_vector(raw, self._lengths)
        if v is None:
            return self._unknown.copy()
        if len(v) == self._lengths[0] and self._lengths[0] != self.n:
            return v[self._all_index]
        return v.copy()

    def _context(self, action, state, now) -> StepContext:
        try:
            now = float(now)
        except (TypeError, ValueError, OverflowError):
            now = math.nan
        q, dq = self._measured(state)
        return StepContext(
            now=now, dt=self.dt, action=as_vector(action, (self.mapping.size,)), q=q, dq=dq, state=state,
            prev=self._prev.copy(), position_control=self.position_control, kp=self.kp.copy(),
            kd=self.kd.copy(), prev_behaviour=self._prev_behaviour)

    def _choose_source(self, ctx: StepContext) -> None:
        """Map the mode to a behaviour and the target it starts from."""
        mode = ctx.mode
        behaviour = self.fault_mode if mode == "estop" else _BEHAVIOUR.get(mode, mode)
        ctx.mode = "hold" if mode == "soft_hold" else mode
        ctx.behaviour = behaviour
        if not self.position_control:
            if behaviour == "damping":
                with np.errstate(all="ignore"):
                    ctx.value = np.where(np.isfinite(ctx.dq), -self.damping_kd * ctx.dq, 0.0)
            elif behaviour == "policy":
                ctx.value = np.zeros(self.n)  # set by ActionMap
            else:  # hold, ramp: no force
                ctx.value = np.zeros(self.n)
            return
        if behaviour == "damping":
            if self.gains == "commanded":
                ctx.kp = np.zeros(self.n)
                ctx.kd = np.full(self.n, self.damping_kd)
            # follow the measurement (rate-limited by the filters); hold where it is suspect
            suspect = ~np.isfinite(ctx.q) if ctx.suspect is None else ctx.suspect
            ctx.value = np.where(suspect, ctx.prev, np.clip(np.nan_to_num(ctx.q), self.lower, self.upper))
        elif behaviour == "hold":
            stand = mode == "soft_hold" and self.spec.stands_without_command  # a stale command
            ctx.value = self.default.copy() if stand else ctx.prev.copy()
        elif behaviour == "ramp":
            ctx.value = self.ramp.target(ctx.now) if self.ramp.start is not None else ctx.prev.copy()
        else:
            ctx.value = ctx.prev.copy()  # replaced by ActionMap

    def _finish(self, ctx: StepContext) -> SafetyCommand:
        v = np.asarray(ctx.value, dtype=np.float64)
        finite = all_finite(v)
        if self.position_control:
            lo, hi, fallback = self.lower, self.upper, ctx.prev
        else:
            lo, hi, fallback = self._neg_tau_max, self.tau_max, 0.0
        # the final clip: np.clip (without its overhead) of the finite values, the fallback elsewhere
        out = np.minimum(np.maximum(v if finite else np.where(np.isfinite(v), v, fallback), lo), hi)
        if self.position_control:
            self.torque.bound_gains(ctx, out, scale_gains=self.gains == "commanded")
            kp, kd = (_gain(ctx.kp), _gain(ctx.kd)) if self.gains == "commanded" else (self.kp, self.kd)
            position, force = out, None
        else:
            kp = kd = np.zeros(self.n)
            position, force = None, out
        if not same_values(out, v):
            with np.errstate(all="ignore"):
                fixed = np.abs(out - v)
            if not (fixed <= 1e-12).all():
                ctx.intervene(FINAL_GUARD, np.nan_to_num(fixed, nan=np.inf).max())
        self._prev = out
        self.ramp.from_measured = False  # from now on every ramp starts from the last command
        self._prev_behaviour = ctx.behaviour
        self.mode = ctx.mode
        when = ctx.now if math.isfinite(ctx.now) else None
        for name, mag in ctx.interventions.items():
            self._count(name, mag, when)
        return SafetyCommand(mode=ctx.mode, position=None if position is None else position.copy(),
                             force=None if force is None else force.copy(), kp=kp, kd=kd,
                             interventions=dict(ctx.interventions), joint_names=self.joint_names,
                             q=ctx.q.copy(), dq=ctx.dq.copy())


def _gain(k: np.ndarray) -> np.ndarray:
    """Gains as sent: negative -> 0, NaN/inf -> 0 (`k` itself where it needs neither: the
    step's gains are its own arrays)."""
    values = k.tolist()
    if all(map(math.isfinite, values)) and (not values or min(values) >= 0.0):
        return k
    k = np.maximum(k, 0.0)
    return np.where(np.isfinite(k), k, 0.0)

