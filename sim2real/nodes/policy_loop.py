"""The policy node's loop: its executor (`make_executor`), and `PolicyNodeLoop.spin`, which
handles messages and services as they come and runs the control step when it is due
(`timing.ControlSchedule`), never on older readings than have arrived.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import rclpy

# After a stall, DDS's receive thread may run only some ms after this one (measured on a loaded
# 2-core machine: 3 ms was too short, and a stalled node went to damping on fresh data).
CATCH_UP_QUIET = 0.02  # s without news before the catch-up gives up on the sensors

def make_executor(kind: str) -> Any:
    """rclpy's SingleThreadedExecutor ("single") or the C++ EventsExecutor ("events")."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor()


def _sleep_until(t: float) -> None:
    """Wait until monotonic time `t`: sleep, then spin for the last 0.1 ms (sleep overshoots)."""
    left = t - time.monotonic()
    if left > 2e-4:
        time.sleep(left - 1e-4)
    while time.monotonic() < t:
        pass


class PolicyNodeLoop:
    """How the policy node runs (a part of `PolicyNode`, which sets the attributes used here:
    schedule, settings, chain, builder, limits, dt, callbacks, step_requested, and `_step`)."""

    def spin(self, executor: Any, stop: threading.Event) -> None:
        """Run the node until `stop` is set: messages and services as they come, the control
        step when it is due (`timing.ControlSchedule`), and before a timer step every message
        already waiting, so a step never runs on older readings than have arrived."""
        schedule = self.schedule
        priority = self.settings.realtime_priority
        if priority:
            try:  # this thread only: the control loop preempts ordinary processes (not the kernel's)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            except (OSError, AttributeError) as e:
                self.get_logger().warning(f"realtime_priority {priority} not granted ({e}): normal scheduling")
        schedule.start(time.monotonic())
        failures = 0
        while not stop.is_set() and rclpy.ok(context=self.context):
            try:
                self._spin_once(executor)
                failures = 0
            except Exception as e:  # a bug in a callback must not silence the robot: latch the e-stop, go on
                failures += 1
                self.get_logger().error(f"internal error, e-stop latched: {type(e).__name__}: {e}",
                                        throttle_duration_sec=1.0)
                self.chain.estop(f"internal error: {type(e).__name__}: {e}")
                if failures > 100:
                    raise

    def _spin_once(self, executor: Any) -> None:
        """One turn of `spin`: a due step, or waiting for (and handling) the next message."""
        schedule = self.schedule
        now = time.monotonic()
        if not (self.step_requested or schedule.timer_due(now)):
            executor.spin_once(timeout_sec=min(schedule.timeout(now), 0.05))
            return
        deadline_tick = not self.step_requested
        taking = now  # from here until the step, only a stall of the node takes time
        if schedule.last_step is not None and now - schedule.last_step > 2 * self.dt:
            self._after_stall(executor)
        elif deadline_tick:  # a timer step: first what has arrived (an event step runs on its state at once)
            self._drain(executor)
        ready = taking
        if deadline_tick:
            _sleep_until(schedule.deadline)  # woken `lead` early to drain: now step on the tick
            ready = max(ready, schedule.deadline)
        self.step_requested = False
        now = time.monotonic()
        if now - ready > 0.5 * self.dt:
            # stopped somewhere between starting to take the messages and stepping: in the drain
            # (DDS's receive thread, stopped too, may not have handed over the backlog yet), in a
            # catch-up, or in the wait for the tick
            self._after_stall(executor)
            now = time.monotonic()
        try:
            self._step(now)
        finally:
            schedule.stepped(now, deadline_tick)

    def _after_stall(self, executor: Any) -> None:
        """The node itself was away (a stall, wherever it landed): what the sensors sent meanwhile
        may still be in DDS's hands; take it first, so that the watchdog judges the sensors on
        what they sent, not on how long this process slept."""
        self._catch_up(executor)
        self._drain(executor)

    def _catch_up(self, executor: Any) -> None:
        """After a stall: handle what DDS delivers until the joint (and IMU) readings are fresh
        again (younger than half the shortest sensor timeout), DDS has had nothing more for
        `CATCH_UP_QUIET` s (the sensors then really are silent, and the watchdog says so), or
        that shortest timeout has passed. The backlog of a long stall comes oldest first, each
        message screened: on a loaded machine that takes longer than the stall's news is old
        (measured: 150 ms of a 200 Hz robot, 50 ms of catching up left the readings 55-130 ms
        old), and the watchdog would trip on data that was on time. Catching up for longer
        than a sensor timeout would hide a silence, so it never does."""
        watchdog = self.limits.watchdog
        timeout = min(t for t in (watchdog.joint_states, watchdog.imu) if t is not None)
        fresh = 0.5 * timeout
        start = now = time.monotonic()
        end, last_news, handled = now + timeout, now, 0
        while True:
            measured = self.builder.watched_reading_time()
            if measured is not None and now - measured < fresh:
                return  # fresh (at once: a stall too short to matter, or one already caught up)
            if now >= end or now - last_news > CATCH_UP_QUIET:
                break
            before = self.callbacks
            executor.spin_once(timeout_sec=min(0.002, end - now))
            now = time.monotonic()
            if self.callbacks != before:
                last_news, handled = now, handled + self.callbacks - before
        age = "none yet" if measured is None else f"{1e3 * (now - measured):.0f} ms old"
        self.get_logger().warning(
            f"after a stall of the node: {handled} messages in {1e3 * (now - start):.0f} ms, "
            f"the sensor readings still {age}", throttle_duration_sec=1.0)

    def _drain(self, executor: Any, limit: int = 100) -> None:
        """Handle the callbacks that are ready now, without waiting (at most `limit`)."""
        for _ in range(limit):
            before = self.callbacks
            executor.spin_once(timeout_sec=0.0)
            if self.callbacks == before:
                return
