"""When the policy node steps, and how old its readings are (no ROS import; unit-tested).

`ControlSchedule` decides when the control step runs:

- ``timer`` (default, like a ros2_control controller): on a fixed grid t0 + k * dt. Before
  each step the node first handles every message already waiting (`PolicyNode.spin`), so a
  step never runs on readings older than what has arrived.
- ``joint_states`` (event-driven): as soon as a JointState arrives, so the command is
  computed from the freshest reading (sensor -> command latency of a DDS hop plus the
  computation, instead of up to a period). A sensor stream faster than the control rate is
  decimated to one step per ``round(dt / sensor period)`` messages; steps are never closer
  than half a period (a flood cannot speed the policy up); without messages a fallback tick
  runs 1.5 periods after the last step, then every period, so the watchdog still runs.

A step that starts more than half a period after its deadline (event-driven: more than two
periods after the previous step, when the fallback would have run), or a timer deadline
passed without a step, is an *overrun* of the node itself (a stall, an overloaded machine):
it is counted and reported as such, separately from sensor timeouts.

`StampTracker` maps a message's ``header.stamp`` onto the node's monotonic clock: the time
the sensor measured = arrival - (ROS now - stamp). The watchdog compares that measurement
time, not the arrival time, against its timeout, so a stream that is delayed, replays old
data or has a frozen stamp ages exactly like silence. A stamp from the future (beyond a
tolerance for clock skew), a zero (unset) stamp, or one older than the last accepted is
refused with the reason named.

Clock assumptions: the sensor's stamp and the node's ROS clock are the same clock: the
system clock (on one host, or hosts synchronised with chrony/PTP to well under the
watchdog timeouts), or simulation time from ``/clock`` when both use ``use_sim_time``.
Message ages are computed on that clock; the control schedule and the watchdog run on the
monotonic clock, so a paused ``/clock`` cannot stop the watchdog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TRIGGERS = ("timer", "joint_states")


@dataclass
class Overruns:
    """Node overruns: steps that started late, deadlines passed without a step."""

    late_steps: int = 0
    missed_ticks: int = 0
    max_lateness: float = 0.0  # s

    @property
    def total(self) -> int:
        return self.late_steps + self.missed_ticks


class ControlSchedule:
    """When to run the next control step (see the module docstring). Times are monotonic s."""

    def __init__(self, dt: float, trigger: str = "timer"):
        if trigger not in TRIGGERS:
            raise ValueError(f"control trigger must be one of {TRIGGERS}, got {trigger!r}")
        self.dt, self.trigger = float(dt), trigger
        self.deadline: float | None = None  # next timer tick / fallback tick
        self.last_step: float | None = None
        self.overruns = Overruns()
        # event mode: sensor period estimate and messages since the last step
        self._last_arrival: float | None = None
        self._period: float | None = None
        self._arrivals = 0
        self._deferred = False  # the deadline is a state's step, held back to keep steps apart

    def start(self, now: float) -> None:
        if self.deadline is None:
            self.deadline = now

    @property
    def lead(self) -> float:
        """How long before a deadline the node wakes up to handle what has arrived, so that the
        step itself starts on time (0.5 ms, at most a tenth of a period)."""
        return min(0.0005, 0.1 * self.dt)

    def timeout(self, now: float) -> float:
        """Seconds until it is time to prepare the next deadline's step (0 if it is)."""
        if self.deadline is None:
            return self.dt
        return max(0.0, self.deadline - self.lead - now)

    def timer_due(self, now: float) -> bool:
        """Time to prepare the step of the next deadline (it is at most `lead` away)."""
        return self.deadline is not None and now >= self.deadline - self.lead

    def on_joint_state(self, now: float) -> bool:
        """A complete JointState arrived at `now`: True if the step should run now (event mode)."""
        if self.trigger != "joint_states":
            return False
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            if gap > 0:  # running estimate of the sensor period, robust to the odd gap
                self._period = gap if self._period is None else self._period + 0.1 * (min(gap, 4 * self._period)
                                                                                      - self._period)
        self._last_arrival = now
        self._arrivals += 1
        if self.last_step is None:
            return True
        every = max(1, round(self.dt / self._period)) if self._period else 1
        if self._arrivals < every:
            return False
        earliest = self.last_step + 0.5 * self.dt
        if now >= earliest:
            return True
        # too soon after the last step (a fallback tick just ran, or a flood): step with the
        # freshest state at the earliest moment allowed, which also locks onto the stream's phase
        if self.deadline is None or earliest < self.deadline:
            self.deadline, self._deferred = earliest, True
        return False

    def stepped(self, now: float, deadline_tick: bool) -> None:
        """Record a step at `now`; `deadline_tick`: it ran because a deadline was due."""
        dt = self.dt
        if deadline_tick and self._deferred:
            deadline_tick = False  # a state's step that waited for its turn, not a fallback
        self._deferred = False
        # lateness: past the timer's deadline; event-driven: past when the fallback would have run
        late = 0.0
        if self.trigger == "timer":
            if deadline_tick and self.deadline is not None:
                late = now - self.deadline
        elif self.last_step is not None:
            late = now - self.last_step - 1.5 * dt
        if late > 0.5 * dt:
            self.overruns.late_steps += 1
            self.overruns.max_lateness = max(self.overruns.max_lateness, late)
        if self.trigger == "timer":
            d = (self.deadline if self.deadline is not None else now) + dt
            if d <= now:  # whole periods passed without a step: skip them, do not burst
                missed = int(math.floor((now - d) / dt)) + 1
                self.overruns.missed_ticks += missed
                d += missed * dt
            self.deadline = d
        else:
            # fallback: 1.5 periods after an event-driven step, then every period
            self.deadline = now + (dt if deadline_tick else 1.5 * dt)
        self.last_step = now
        self._arrivals = 0


class StampTracker:
    """Header stamps of one message stream -> measurement times on the monotonic clock."""

    def __init__(self, what: str, future_tolerance: float, require_stamps: bool = True):
        self.what, self.future_tolerance, self.require_stamps = what, float(future_tolerance), require_stamps
        self.last_stamp: float | None = None

    def measured_at(self, stamp: float, ros_now: float, arrival: float) -> tuple[float | None, str | None]:
        """(measurement time on the arrival clock, None) or (None, why the message is refused)."""
        if stamp == 0.0:
            if self.require_stamps:
                return None, f"{self.what} header.stamp is zero (unset): its age is unknown"
            return arrival, None
        if not math.isfinite(stamp):
            return None, f"{self.what} header.stamp is not finite"
        age = ros_now - stamp
        if age < -self.future_tolerance:
            return None, (f"{self.what} header.stamp is {-age:.3f} s in the future (clocks out of sync? tolerated: "
                          f"{self.future_tolerance} s)")
        if self.last_stamp is not None and stamp < self.last_stamp:
            return None, f"{self.what} header.stamp went back {self.last_stamp - stamp:.3f} s (out of order or replayed)"
        self.last_stamp = stamp
        return arrival - max(age, 0.0), None

    def reset(self) -> None:
        self.last_stamp = None
