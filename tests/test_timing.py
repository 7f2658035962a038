"""When the policy node steps and how it ages its readings (`sim2real/nodes/timing.py`), on
simulated clocks (no ROS, no sleeping)."""

from __future__ import annotations

import numpy as np
import pytest

from roboreal.sim2real.nodes.timing import ControlSchedule, StampTracker

DT = 0.02


def run_events(schedule: ControlSchedule, arrivals: list[float], until: float) -> list[tuple[float, str]]:
    """Drive `schedule` as `PolicyNode.spin` does: arrivals may request a step; otherwise the
    deadline ticks. Returns (time, "state" | "timer") of every step."""
    steps = []
    schedule.start(0.0)
    events = sorted(arrivals)
    i = 0
    t = 0.0
    while t < until:
        deadline = schedule.deadline
        nxt = events[i] if i < len(events) else np.inf
        if nxt <= deadline:
            t = nxt
            i += 1
            if schedule.on_joint_state(t):
                steps.append((t, "state"))
                schedule.stepped(t, deadline_tick=False)
        else:
            t = deadline
            steps.append((t, "timer"))
            schedule.stepped(t, deadline_tick=True)
    return steps


def test_timer_trigger_keeps_its_grid_and_counts_missed_ticks_without_bursting():
    s = ControlSchedule(DT, "timer")
    s.start(10.0)
    assert s.timer_due(10.0)
    s.stepped(10.0, deadline_tick=True)
    assert s.deadline == pytest.approx(10.02)
    s.stepped(10.021, deadline_tick=True)  # 1 ms late: on time
    assert s.deadline == pytest.approx(10.04) and s.overruns.total == 0
    s.stepped(10.16, deadline_tick=True)  # a 120 ms stall: late, and 5 ticks never ran
    assert s.overruns.late_steps == 1 and s.overruns.missed_ticks == 6
    assert s.overruns.max_lateness == pytest.approx(0.12)
    assert 10.16 < s.deadline <= 10.18 + 1e-9  # next tick on the grid, not a burst of catch-up steps


def test_event_trigger_steps_on_every_state_at_the_control_rate():
    arrivals = [0.003 + k * DT + 0.001 * np.sin(k) for k in range(50)]  # 50 Hz with 1 ms jitter
    steps = run_events(ControlSchedule(DT, "joint_states"), arrivals, until=arrivals[-1])
    by_state = [t for t, how in steps if how == "state"]
    assert len(by_state) >= 49  # every state, at once (the first may go to the initial tick)
    assert set(np.round(by_state, 9)) <= set(np.round(arrivals, 9))


def test_event_trigger_decimates_a_faster_stream_to_the_control_rate():
    arrivals = [k * 0.001 for k in range(1, 2001)]  # a 1 kHz driver, 50 Hz policy
    steps = run_events(ControlSchedule(DT, "joint_states"), arrivals, until=2.0)
    n = len(steps)
    assert 95 <= n <= 105, n  # 2 s at 50 Hz, not 1000 steps
    gaps = np.diff([t for t, _ in steps])
    assert gaps.min() >= 0.5 * DT - 1e-9


def test_event_trigger_floods_cannot_speed_the_policy_up_and_silence_falls_back_to_ticks():
    flood = [0.1 + k * 1e-5 for k in range(500)]  # 500 messages in 5 ms
    steps = run_events(ControlSchedule(DT, "joint_states"), [0.05] + flood, until=1.0)
    times = [t for t, _ in steps]
    assert np.diff(times).min() >= 0.5 * DT - 1e-9
    # after the flood the stream is silent: the fallback ticks every period, so the watchdog runs
    late = [t for t, how in steps if t > 0.2]
    assert late and all(how == "timer" for t, how in steps if t > 0.2)
    assert np.allclose(np.diff(late), DT)


def test_stamps_age_readings_and_refuse_bad_ones():
    tr = StampTracker("JointState", future_tolerance=0.05)
    # measured 30 ms before the node read it: its measurement time is 30 ms before arrival
    when, why = tr.measured_at(stamp=99.97, ros_now=100.0, arrival=5.0)
    assert why is None and when == pytest.approx(4.97)
    # a frozen stamp: every message reads as measured at the same moment, so it ages
    for k in range(1, 4):
        when, why = tr.measured_at(stamp=99.97, ros_now=100.0 + k, arrival=5.0 + k)
        assert why is None and when == pytest.approx(4.97)
    assert "in the future" in tr.measured_at(stamp=104.2, ros_now=104.0, arrival=9.0)[1]
    assert tr.measured_at(stamp=104.02, ros_now=104.0, arrival=9.0)[0] == pytest.approx(9.0)  # skew within tolerance
    assert "went back" in tr.measured_at(stamp=100.5, ros_now=104.0, arrival=9.0)[1]
    assert "zero" in tr.measured_at(stamp=0.0, ros_now=104.0, arrival=9.0)[1]
    assert "not finite" in tr.measured_at(stamp=float("nan"), ros_now=104.0, arrival=9.0)[1]
    lenient = StampTracker("Imu", 0.05, require_stamps=False)
    assert lenient.measured_at(stamp=0.0, ros_now=104.0, arrival=9.0) == (9.0, None)
