"""The safety chain (`roboreal.sim2real.safety`): properties of every filter and of the
whole chain, for every robot roboreal ships (cartpole, panda, go1: a missing robot.yaml
is a failure, not a skip), and the behaviours the issue asks for.

Property tests use hypothesis with NaN, inf and huge values everywhere. The number of
cases tried is printed in the terminal summary ("hypothesis: N cases tried ..."); for
hypothesis' own per-test statistics add ``--hypothesis-show-statistics``. Set
ROBOREAL_SAFETY_EXAMPLES to scale the number of examples (default 300 for whole-chain
properties, a third of that for the single-filter ones).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as event_
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from roboreal.config import ConfigError
from roboreal.robots import spec as spec_module
from roboreal.control.action import ActionMapping
from roboreal.sim2real.safety import (
    MODES,
    ActionClip,
    PositionLimit,
    RateLimit,
    RobotState,
    SafetyChain,
    SafetyLimits,
    StepContext,
    TiltGuard,
    TorqueLimit,
    VelocityLimit,
)
from roboreal.sim2real.safety.geometry import projected_gravity, roll_pitch

ROBOTS = ("cartpole", "panda", "go1")
DT = 0.02
EXAMPLES = int(os.environ.get("ROBOREAL_SAFETY_EXAMPLES", "300"))
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
WHOLE_CHAIN = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=_HEALTH, print_blob=True)
ONE_FILTER = settings(max_examples=max(10, EXAMPLES // 3), deadline=None, suppress_health_check=_HEALTH,
                      print_blob=True)
SLOW = settings(max_examples=max(5, EXAMPLES // 10), deadline=None, suppress_health_check=_HEALTH,
                print_blob=True)
TOL = 1e-9

# ----------------------------------------------------------------------------- cases tried
_CASES: collections.Counter = collections.Counter()


def counted(fn):
    """Count the cases hypothesis runs through a test (goes under @given)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        key = fn.__name__ + (f"[{kwargs['name']}]" if "name" in kwargs else "")
        _CASES[key] += 1
        return fn(*args, **kwargs)

    return wrapper


class _CasesReport:
    def pytest_terminal_summary(self, terminalreporter):
        if not _CASES:
            return
        terminalreporter.write_sep("-", f"hypothesis: {sum(_CASES.values())} cases tried in "
                                        f"{len(_CASES)} property tests (tests/test_safety.py)")
        for key, n in sorted(_CASES.items()):
            terminalreporter.write_line(f"{n:7d}  {key}")


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request):
    pm = request.config.pluginmanager
    if pm.get_plugin("safety-cases-report") is None:
        pm.register(_CasesReport(), "safety-cases-report")
    yield


# ----------------------------------------------------------------------------- robots
def robot_spec(name: str):
    return spec_module.load_robot(name)  # every robot in ROBOTS ships with roboreal


def mapping_for(spec, kind: str = "absolute") -> ActionMapping:
    names = tuple(spec.actuated_names)
    n = len(names)
    if spec.control_mode == "force":  # 1.5x the force limit: the torque filter must clip
        return ActionMapping("force", names, tuple(1.5 * spec.array("torque_limit")), (0.0,) * n)
    half = (spec.upper - spec.lower) / 2  # reaches past the limits from the default pose
    if kind == "delta":
        return ActionMapping("joint_position_delta", names, tuple(0.2 * half), tuple(spec.array("default")))
    return ActionMapping("joint_position_absolute", names, tuple(half), tuple(spec.array("default")))


def needs_imu(chain: SafetyChain) -> bool:
    return chain.limits.tilt_limit is not None


def nominal_state(chain: SafetyChain, q=None, now: float = 0.0, dq=None) -> RobotState:
    """A healthy measurement: actuated joints at `q` (default pose), fresh stamps."""
    n = chain.n
    return RobotState(
        position=np.array(chain.default if q is None else q, dtype=float),
        velocity=np.zeros(n) if dq is None else np.asarray(dq, dtype=float),
        orientation=np.array([1.0, 0.0, 0.0, 0.0]) if needs_imu(chain) else None,
        joint_state_stamp=now, imu_stamp=now, command_stamp=now)


def quat_from_roll_pitch(roll: float, pitch: float) -> np.ndarray:
    cr, sr, cp, sp = math.cos(roll / 2), math.sin(roll / 2), math.cos(pitch / 2), math.sin(pitch / 2)
    return np.array([cr * cp, sr * cp, cr * sp, -sr * sp])  # R = Ry(pitch) Rx(roll)


def run_until_policy(chain: SafetyChain, action, now: float = 0.0, max_steps: int = 2000):
    """Step a healthy, perfectly tracking robot until the policy has fully faded in."""
    state = nominal_state(chain, now=now)
    chain.reset(state, now)
    cmd = None
    for _ in range(max_steps):
        cmd = chain.step(action, state, now)
        if cmd.mode == "policy" and "startup_ramp" not in cmd.interventions:
            return cmd, now
        now += DT
        state = nominal_state(chain, q=cmd.position if cmd.position is not None else state.position, now=now)
    raise AssertionError(f"no policy after {max_steps} steps: {cmd}")


@functools.lru_cache(maxsize=None)
def _warm(name: str, kind: str, gains: str | None):
    spec = robot_spec(name)
    chain = SafetyChain(spec, mapping_for(spec, kind), DT, gains=gains)
    cmd, now = run_until_policy(chain, np.zeros(chain.mapping.size))
    return chain, cmd, now


def warm_chain(name: str, kind: str = "absolute", gains: str | None = None):
    """A chain already in policy mode (deep copy of a cached one), its last command and time."""
    chain, cmd, now = _warm(name, kind, gains)
    return copy.deepcopy(chain), cmd, now


def fk(chain: SafetyChain, joints) -> np.ndarray:
    return chain.filter("workspace").end_effector(np.asarray(joints, dtype=float))


def inside_box(chain: SafetyChain, p: np.ndarray, tol: float = TOL) -> bool:
    lo, hi = np.array(chain.limits.workspace_min), np.array(chain.limits.workspace_max)
    return bool(np.all(p >= lo - tol) and np.all(p <= hi + tol))


# ----------------------------------------------------------------------------- strategies
WILD = st.floats(allow_nan=True, allow_infinity=True)  # anything a float can be, huge included
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e30, -1e30, 0.0])


def values(lo: float, hi: float):
    """Mostly plausible values, often wild ones."""
    return st.one_of(st.floats(lo, hi), st.floats(lo, hi), st.floats(lo, hi), WILD, SPECIAL)


def vec(n: int, elements):
    return hnp.arrays(np.float64, n, elements=elements)


FRESH = st.floats(0, 0.04)  # seconds since the message: younger than every timeout
AGE = st.one_of(FRESH, st.floats(0, 1.0), st.floats(-1.0, 0.0), st.none(), SPECIAL)


@st.composite
def step_state(draw, chain: SafetyChain, prev_out: np.ndarray | None, now: float, wild: bool = True) -> RobotState:
    """A measurement. Most steps are plausible (finite, fresh, near the last command, joint
    speeds up to 1.5x their limits) so the chain stays in policy mode long enough to be
    tested there; the rest are wild: NaN, inf, huge and impossible values, malformed shapes,
    stale / future / missing stamps."""
    n, n_all = chain.n, len(chain.spec.joints)
    act = [i for i, j in enumerate(chain.spec.joints) if j.actuated]
    length = draw(st.sampled_from(sorted({n, n_all})))
    plausible = not wild or draw(st.integers(0, 9)) < 7
    kind = draw(st.sampled_from(["track", "track", "track", "raw"] + ([] if plausible else ["bad_shape"])))
    v_lim = chain.spec.array("velocity_limit", actuated_only=False)
    if kind == "bad_shape":
        q, dq = np.zeros(n_all + 2), draw(vec(length, values(-50, 50)))
    elif plausible:
        lo = np.array([j.position_limits[0] for j in chain.spec.joints])
        hi = np.array([j.position_limits[1] for j in chain.spec.joints])
        if length != n_all:
            lo, hi, v_lim = lo[act], hi[act], v_lim[act]
        q = lo + draw(vec(length, st.floats(0, 1))) * (hi - lo)
        if kind == "track" and chain.position_control:
            base = chain.default if prev_out is None else prev_out
            q[act if length == n_all else slice(None)] = base + draw(vec(n, st.floats(-0.1, 0.1)))
        dq = draw(vec(length, st.floats(-1.5, 1.5))) * v_lim
    else:
        q = draw(vec(length, values(-5, 5)))
        if kind == "track" and chain.position_control:
            base = chain.default if prev_out is None else prev_out
            q[act if length == n_all else slice(None)] = base + draw(vec(n, st.floats(-0.3, 0.3)))
        dq = draw(vec(length, values(-50, 50)))
    orientation = gravity = gyro = accel = None
    if needs_imu(chain):
        rp = st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3))
        if not plausible:
            rp = st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5))
        orientation = quat_from_roll_pitch(*draw(rp))
        gyro = draw(vec(3, st.floats(-5, 5)))
        accel = draw(vec(3, st.floats(-30, 30)))
        if not plausible:
            orientation = draw(st.one_of(st.just(orientation), vec(4, values(-1, 1)), st.none()))
            gravity = draw(st.one_of(st.none(), vec(3, values(-1, 1))))
            gyro = draw(st.one_of(st.none(), vec(3, values(-50, 50))))
            accel = draw(st.one_of(st.none(), vec(3, values(-300, 300))))
    ages = draw(st.tuples(*[FRESH if plausible else AGE] * 3))
    stamps = [None if age is None else now - age for age in ages]
    return RobotState(position=q, velocity=dq, orientation=orientation, gravity=gravity, angular_velocity=gyro,
                      linear_acceleration=accel, joint_state_stamp=stamps[0], imu_stamp=stamps[1],
                      command_stamp=stamps[2])


def step_action(chain: SafetyChain, wild: bool = True):
    a = chain.mapping.size
    if not wild:
        return vec(a, st.floats(-1.5, 1.5))
    return st.one_of(vec(a, st.floats(-1.5, 1.5)), vec(a, st.floats(-1.5, 1.5)), vec(a, values(-1.5, 1.5)),
                     vec(a + 1, WILD), st.just(None), st.just("not an action"))


ADVANCE = st.one_of(st.just(DT), st.just(DT), st.just(DT), st.just(0.0), st.floats(0, 0.6))
NOW_OVERRIDE = st.one_of(*[st.none()] * 12, SPECIAL)  # now itself NaN/inf/huge now and then
EVENT = st.sampled_from(["none"] * 12 + ["estop", "reset", "release_estop"])


def measured(chain: SafetyChain, state: RobotState) -> tuple[np.ndarray, np.ndarray]:
    """The actuated q, dq as the chain reads them (NaN where unusable)."""
    out = []
    for v in (state.position, state.velocity):
        v = np.asarray(v, dtype=float)
        if len(v) == len(chain.spec.joints):
            v = v[[i for i, j in enumerate(chain.spec.joints) if j.actuated]]
        elif len(v) != chain.n:
            v = np.full(chain.n, np.nan)
        out.append(v)
    return out[0], out[1]


# ----------------------------------------------------------------------------- the invariants
def fold(intervals) -> tuple[np.ndarray, np.ndarray]:
    """The chain's constraint semantics, written out again: each interval (in priority order)
    is met where it is compatible with those before it, else as closely as they allow."""
    flo, fhi = intervals[0]
    for lo, hi in intervals[1:]:
        flo, fhi = np.minimum(np.maximum(lo, flo), fhi), np.minimum(np.maximum(hi, flo), fhi)
    return flo, fhi


def torque_interval(chain: SafetyChain, q, dq, kp, kd) -> tuple[np.ndarray, np.ndarray]:
    """Targets t with |kp (t - q) - kd dq| <= tau_max (everything where it cannot be computed)."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(q) & np.isfinite(dq) & (kp > 0)
        safe = np.where(kp > 0, kp, 1.0)
        centre, half = q + kd * dq / safe, chain.tau_max / safe
        lo, hi = centre - half, centre + half
    ok &= np.isfinite(lo) & np.isfinite(hi)
    return np.where(ok, lo, -np.inf), np.where(ok, hi, np.inf)


def check_command(chain: SafetyChain, cmd, state: RobotState, prev_out: np.ndarray | None) -> None:
    """Everything the chain promises about one output, for any input. `prev_out`: the
    previous command (None for a chain's first)."""
    n = chain.n
    assert cmd.mode in MODES
    assert "final_guard" not in cmd.interventions, f"a filter left the output out of bounds: {cmd}"
    assert cmd.kp.shape == cmd.kd.shape == (n,)
    assert np.isfinite(cmd.kp).all() and np.isfinite(cmd.kd).all()
    assert (cmd.kp >= 0).all() and (cmd.kd >= 0).all()
    assert all(math.isfinite(m) for m in cmd.interventions.values())
    q, dq = measured(chain, state)
    # the chain may reject readings as implausible (a latched fault), never invent or change them
    used_q, used_dq = cmd.q, cmd.dq
    assert np.array_equal(used_q[np.isfinite(used_q)], q[np.isfinite(used_q)])
    assert np.array_equal(used_dq[np.isfinite(used_dq)], dq[np.isfinite(used_dq)])
    rejected = (np.isfinite(q) & ~np.isfinite(used_q)) | (np.isfinite(dq) & ~np.isfinite(used_dq))
    if rejected.any():
        assert cmd.mode == chain.fault_mode or cmd.mode == "estop", cmd.mode
        assert "plausibility" in cmd.interventions, cmd.interventions
    q, dq = used_q, used_dq
    finite = np.isfinite(q) & np.isfinite(dq)
    if not chain.position_control:
        assert cmd.position is None and cmd.force.shape == (n,)
        assert np.isfinite(cmd.force).all()
        assert (np.abs(cmd.force) <= chain.tau_max).all()
        return
    t = cmd.position
    assert cmd.force is None and t.shape == (n,)
    assert np.isfinite(t).all()
    # 1. position limits with the margin: always
    assert (t >= chain.lower).all() and (t <= chain.upper).all(), (t, chain.lower, chain.upper)
    # 2. rate: always, against the previous command (every mode, resets, e-stop releases)
    limits = [(chain.lower, chain.upper)]
    if prev_out is not None:
        r = chain.max_rate * chain.dt
        assert (np.abs(t - prev_out) <= r * (1 + TOL) + TOL).all(), (cmd.mode, t - prev_out, r)
        limits.append((prev_out - r, prev_out + r))
    # the gains the robot applies: fixed ones are robot.yaml's whatever the mode
    if chain.gains == "fixed":
        assert np.array_equal(cmd.kp, chain.kp) and np.array_equal(cmd.kd, chain.kd), (cmd.kp, cmd.kd)
    else:  # commanded gains: the torque bound holds outright wherever the state is finite
        with np.errstate(all="ignore"):
            tau = cmd.kp * (t - q) - cmd.kd * dq
        assert (np.abs(tau[finite]) <= chain.tau_max[finite] * (1 + TOL) + TOL).all(), (tau, chain.tau_max)
    behaviour = chain.fault_mode if cmd.mode == "estop" else cmd.mode
    # 3. velocity: a joint faster than v_max gets no target leading it further, where 1-2 allow
    over = np.isfinite(q) & (dq > chain.v_max)
    under = np.isfinite(q) & (dq < -chain.v_max)
    limits.append((np.where(under, q, -np.inf), np.where(over, q, np.inf)))
    lo, hi = fold(limits)
    assert (t >= lo - TOL).all() and (t <= hi + TOL).all(), ("velocity", t, lo, hi, q, dq)
    # 4. torque under the PD with the gains the robot applies, where 1-3 allow (commanded
    # gains: the chain first bounds the target with robot.yaml's kp, 0 in damping, then the gains)
    kp = chain.kp if chain.gains == "fixed" or behaviour != "damping" else np.zeros(n)
    limits.append(torque_interval(chain, q, dq, kp, chain.kd))
    lo, hi = fold(limits)
    tol = 1e-9 * (1 + np.abs(t))
    assert (t >= lo - tol).all() and (t <= hi + tol).all(), ("torque", t, lo, hi, q, dq)
    # 5. workspace: inside the box whenever the last command or the measured pose, clipped into
    # all the bounds above, is (outside damping, where the robot is let go)
    if chain.limits.workspace_min is not None and behaviour != "damping" and prev_out is not None:
        anchors = [np.clip(prev_out, lo, hi)] + ([np.clip(q, lo, hi)] if np.isfinite(q).all() else [])
        if any(inside_box(chain, fk(chain, a), 0.0) for a in anchors):
            assert inside_box(chain, fk(chain, t)), fk(chain, t)


# ============================================================================= whole chain
@pytest.mark.parametrize("name", ROBOTS)
@WHOLE_CHAIN
@given(data=st.data())
@counted
def test_chain_output_is_finite_and_within_every_limit_for_any_input(name, data):
    """Any sequence of actions, states, times, e-stops, resets and e-stop releases: every
    output is finite and within every configured limit; the e-stop stays latched until
    release_estop; a reset never moves the command faster than the rate limit."""
    spec = robot_spec(name)
    kind = data.draw(st.sampled_from(["absolute", "delta"]), label="mapping")
    gains = data.draw(st.sampled_from(["fixed", "commanded"] if spec.control_mode == "position" else ["fixed"]),
                      label="gains")
    if data.draw(st.booleans(), label="warm"):
        chain, last, now = warm_chain(name, kind, gains)
        prev_out = last.position
    else:
        chain, now = SafetyChain(spec, mapping_for(spec, kind), DT, gains=gains), 0.0
        chain.reset(nominal_state(chain, now=now), now)
        prev_out = chain.previous_command if chain.position_control else None  # the measured pose
    estopped = False
    sent = prev_out is not None and chain.ramp.from_measured is False  # a command went out already
    wild = data.draw(st.booleans(), label="wild")  # else: only plausible inputs, no events
    for _ in range(data.draw(st.integers(1, 5), label="steps")):
        now += data.draw(ADVANCE)
        override = data.draw(NOW_OVERRIDE) if wild else None
        step_now = now if override is None else override
        state = data.draw(step_state(chain, prev_out, now, wild), label="state")
        event = data.draw(EVENT, label="event") if wild else "none"
        if event == "estop":
            chain.estop("test")
            estopped = True
        elif event == "reset":
            chain.reset(state, step_now)
        elif event == "release_estop":
            chain.release_estop(state, step_now)
            estopped = False
        if not sent and chain.position_control:  # before the first command a reset re-anchors on the measurement
            prev_out = chain.previous_command
        cmd = chain.step(data.draw(step_action(chain, wild), label="action"), state, step_now)
        event_(f"mode={cmd.mode}")
        for name_ in cmd.interventions:
            event_(f"intervened: {name_}")
        check_command(chain, cmd, state, prev_out)
        assert (cmd.mode == "estop") == estopped, (cmd.mode, estopped)
        prev_out = cmd.position if cmd.position is not None else cmd.force
        sent = True


@pytest.mark.parametrize("name", ROBOTS)
@ONE_FILTER  # a simple property: fewer cases than the full output property
@given(actions=st.lists(vec(8, WILD), min_size=1, max_size=6), garbage=st.lists(vec(20, WILD), min_size=1, max_size=3))
@counted
def test_estop_stays_latched_through_any_input_until_release_estop(name, actions, garbage):
    chain, last, now = warm_chain(name)
    prev = last.values
    chain.estop("operator pressed the button")
    assert chain.faults["estop"] == "operator pressed the button"
    for i, a in enumerate(actions):
        now += DT
        g = garbage[i % len(garbage)]
        state = RobotState(position=g[: chain.n], velocity=g[-chain.n:], orientation=g[:4], gravity=g[4:7],
                           joint_state_stamp=g[7], imu_stamp=g[8], command_stamp=now)
        if i % 3 == 2:
            chain.reset(state, now)  # a plain reset does not release the e-stop
        cmd = chain.step(a[: chain.mapping.size], state, now)
        assert cmd.mode == "estop"
        check_command(chain, cmd, state, prev if chain.position_control else None)
        prev = cmd.values
    chain.reset(nominal_state(chain, now=now), now)  # clears the other faults the garbage latched
    chain.release_estop(nominal_state(chain, now=now), now)
    assert "estop" not in chain.faults
    assert chain.step(np.zeros(chain.mapping.size), nominal_state(chain, now=now), now).mode != "estop"


# ============================================================================= single filters
def make_ctx(chain: SafetyChain, value, q=None, dq=None, prev=None, behaviour="policy") -> StepContext:
    n = chain.n
    return StepContext(now=0.0, dt=chain.dt, action=None, state=None, position_control=chain.position_control,
                       q=np.full(n, np.nan) if q is None else np.asarray(q, float),
                       dq=np.full(n, np.nan) if dq is None else np.asarray(dq, float),
                       prev=chain.default.copy() if prev is None else np.asarray(prev, float),
                       kp=chain.kp.copy(), kd=chain.kd.copy(), behaviour=behaviour,
                       value=np.asarray(value, dtype=float))


FINITE = st.floats(allow_nan=False, allow_infinity=False)  # huge included
FINITE_MIXED = st.one_of(st.floats(-5, 5), st.floats(-5, 5), FINITE, st.sampled_from([1e308, -1e308, 0.0]))


@ONE_FILTER
@given(action=vec(4, st.one_of(st.floats(-3, 3), FINITE)))
@counted
def test_action_clip_keeps_the_trained_range(action):
    chain = SafetyChain(robot_spec("cartpole"), mapping_for(robot_spec("cartpole")), DT)
    ctx = make_ctx(chain, np.zeros(chain.n))
    ctx.action = action.copy()
    ActionClip().apply(ctx)
    assert (np.abs(ctx.action) <= 1).all()
    inside = np.abs(action) <= 1
    assert np.array_equal(ctx.action[inside], action[inside])
    assert ("action_clip" in ctx.interventions) == (not inside.all())


@pytest.mark.parametrize("name", ROBOTS)
@ONE_FILTER
@given(data=st.data())
@counted
def test_each_target_filter_enforces_its_own_limit(name, data):
    """Rate, position, velocity and torque filters, each alone, on any finite input."""
    spec = robot_spec(name)
    chain = SafetyChain(spec, mapping_for(spec), DT)
    n = chain.n
    value = data.draw(vec(n, FINITE_MIXED), label="value")
    q = data.draw(vec(n, FINITE_MIXED), label="q")
    dq = data.draw(vec(n, FINITE_MIXED), label="dq")
    if not chain.position_control:
        f = value
        ctx = make_ctx(chain, f, q=q, dq=dq)
        PositionLimit(chain.lower, chain.upper).apply(ctx)
        assert not ((q >= chain.upper) & (ctx.value > 0)).any() and not ((q <= chain.lower) & (ctx.value < 0)).any()
        ctx = make_ctx(chain, f, q=q, dq=dq)
        VelocityLimit(chain.v_max).apply(ctx)
        assert not ((dq > chain.v_max) & (ctx.value > 0)).any() and not ((dq < -chain.v_max) & (ctx.value < 0)).any()
        ctx = make_ctx(chain, f, q=q, dq=dq)
        TorqueLimit(chain.tau_max).apply(ctx)
        assert (np.abs(ctx.value) <= chain.tau_max).all()
        return
    prev = np.clip(data.draw(vec(n, st.floats(-4, 4)), label="prev"), chain.lower, chain.upper)
    ctx = make_ctx(chain, value, prev=prev)
    RateLimit(chain.max_rate).apply(ctx)
    assert (np.abs(ctx.value - prev) <= chain.max_rate * DT * (1 + TOL)).all()
    ctx = make_ctx(chain, value)
    PositionLimit(chain.lower, chain.upper).apply(ctx)
    assert (ctx.value >= chain.lower).all() and (ctx.value <= chain.upper).all()
    q_small = np.clip(q, -10, 10)  # |t - q| is only meaningful at plausible magnitudes
    ctx = make_ctx(chain, value, q=q_small, dq=dq)
    VelocityLimit(chain.v_max).apply(ctx)
    over, under = dq > chain.v_max, dq < -chain.v_max
    assert (ctx.value[over] <= q_small[over]).all() and (ctx.value[under] >= q_small[under]).all()
    assert (ctx.value[~(over | under)] == value[~(over | under)]).all()  # joints within v_max: untouched
    ctx = make_ctx(chain, value, q=q_small, dq=np.clip(dq, -100, 100))
    torque = TorqueLimit(chain.tau_max)
    torque.apply(ctx)  # alone, the torque interval is always reachable
    tau = ctx.kp * (ctx.value - ctx.q) - ctx.kd * ctx.dq
    assert (np.abs(tau) <= chain.tau_max * (1 + 1e-6) + 1e-6).all()
    # and for any target, bound_gains scales the gains until the bound holds
    target = np.clip(value, chain.lower, chain.upper)  # outputs are always within the limits
    ctx = make_ctx(chain, target, q=q, dq=dq)
    torque.bound_gains(ctx, target)
    with np.errstate(all="ignore"):
        tau = ctx.kp * (target - q) - ctx.kd * dq
    assert np.isfinite(ctx.kp).all() and (np.abs(tau) <= chain.tau_max * (1 + TOL) + TOL).all()


@ONE_FILTER
@given(intervals=st.lists(st.tuples(st.integers(0, 3), st.floats(-10, 10), st.floats(0, 5)), min_size=1, max_size=5),
       value=st.floats(-1e6, 1e6))
@counted
def test_constraint_priorities(intervals, value):
    """The feasible interval meets the highest-priority constraint, and each lower one
    wherever it is compatible with all those above it."""
    chain = SafetyChain(robot_spec("cartpole"), mapping_for(robot_spec("cartpole")), DT)
    ctx = make_ctx(chain, [value])
    for prio, lo, width in intervals:
        ctx.constrain(prio, np.array([lo]), np.array([lo + width]))
    flo, fhi = ctx.feasible()
    assert flo[0] <= fhi[0]
    ordered = sorted(intervals, key=lambda c: c[0])
    alo, ahi = -math.inf, math.inf
    for prio, lo, width in ordered:
        hi = lo + width
        if max(alo, lo) <= min(ahi, hi):  # compatible with everything above: met
            alo, ahi = max(alo, lo), min(ahi, hi)
            assert lo - TOL <= flo[0] and fhi[0] <= hi + TOL
        else:  # incompatible: met as closely as the ones above allow
            nearest = ahi if lo > ahi else alo
            alo = ahi = nearest
    assert math.isclose(flo[0], alo, abs_tol=TOL) and math.isclose(fhi[0], ahi, abs_tol=TOL)


@SLOW
@given(offset=vec(7, st.floats(-0.6, 0.6)), step=vec(7, st.floats(-2, 2)))
@counted
def test_workspace_keeps_the_end_effector_in_the_box(offset, step):
    chain, _, _ = warm_chain("panda")
    box = chain.filter("workspace")
    q = np.clip(chain.default + offset, chain.lower, chain.upper)
    assume(inside_box(chain, fk(chain, q), 0.0))
    target = np.clip(q + step, chain.lower, chain.upper)
    ctx = make_ctx(chain, target, q=q, dq=np.zeros(chain.n), prev=q)
    ctx.constrain(0, chain.lower, chain.upper)
    box.apply(ctx)
    assert inside_box(chain, fk(chain, ctx.value))
    assert (ctx.value >= chain.lower).all() and (ctx.value <= chain.upper).all()
    if inside_box(chain, fk(chain, target), 0.0):
        assert np.array_equal(ctx.value, target) and "workspace" not in ctx.interventions
    else:
        assert ctx.interventions["workspace"] > 0


def test_workspace_backs_off_a_target_that_leaves_the_box():
    chain, _, now = warm_chain("panda")
    offset, scale = np.array(chain.mapping.offset), np.array(chain.mapping.scale)
    for j in range(chain.n):  # one joint to an extreme until the hand leaves the box
        for sign in (-1.0, 1.0):
            action = np.zeros(chain.n)
            action[j] = sign
            goal = np.clip(offset + scale * action, chain.lower, chain.upper)
            if not inside_box(chain, fk(chain, goal), 0.0):
                break
        else:
            continue
        break
    else:
        raise AssertionError("no single-joint extreme leaves panda's workspace box: the test needs one")
    q = chain.default.copy()
    for _ in range(300):  # the rate limit walks towards the goal; the box stops it
        now += DT
        cmd = chain.step(action, nominal_state(chain, q=q, now=now), now)
        q = cmd.position
        assert inside_box(chain, fk(chain, q))
    assert chain.report()["workspace"]["count"] > 0
    assert np.abs(q - goal).max() > 1e-3  # it did not get there


# ============================================================================= supervisors
@pytest.mark.parametrize("name", ROBOTS)
@ONE_FILTER
@given(data=st.data())
@counted
def test_non_finite_anything_latches_the_fault_mode(name, data):
    chain, last, now = warm_chain(name)
    state = nominal_state(chain, now=now)
    inputs = ["action", "position", "velocity"] + (["orientation"] if needs_imu(chain) else [])
    what = data.draw(st.sampled_from(inputs))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    action = np.zeros(chain.mapping.size)
    target = action if what == "action" else getattr(state, what)
    target[data.draw(st.integers(0, len(target) - 1))] = bad
    cmd = chain.step(action, state, now + DT)
    fault = chain.spec.safety.fault_mode
    assert cmd.mode == fault and "non_finite" in chain.faults
    check_command(chain, cmd, state, last.position)
    # latched: healthy inputs do not release it, reset does
    zero = np.zeros(chain.mapping.size)
    for k in range(2, 5):
        assert chain.step(zero, nominal_state(chain, now=now + k * DT), now + k * DT).mode == fault
    chain.reset(nominal_state(chain, now=now + 5 * DT), now + 5 * DT)
    assert chain.step(np.zeros(chain.mapping.size), nominal_state(chain, now=now + 6 * DT), now + 6 * DT).mode != fault


def test_non_finite_measured_state_holds_the_last_finite_target():
    chain, last, now = warm_chain("panda")
    state = nominal_state(chain, q=np.full(chain.n, np.nan), now=now + DT)
    cmd = chain.step(np.zeros(chain.mapping.size), state, now + DT)
    assert cmd.mode == "hold" and np.array_equal(cmd.position, last.position)
    assert np.array_equal(cmd.kp, chain.kp)


@pytest.mark.parametrize("gains", ["fixed", "commanded"])
def test_damping_follows_the_measured_position_within_the_rate_limit(gains):
    """Damping lets the robot go: the target follows the measured pose, one rate step at a
    time (a position interface carries no gains: the targets alone must not drive it);
    with commanded gains kp is 0 and kd the damping gain. A glitching encoder is not followed."""
    chain, last, now = warm_chain("go1", gains=gains)
    q = chain.default + 0.05
    r = chain.max_rate * DT
    prev = last.position
    for k in range(1, 4):
        state = nominal_state(chain, q=q, now=now + k * DT, dq=np.full(chain.n, 0.5))
        state.orientation = quat_from_roll_pitch(1.2, 0.0)  # fallen over
        cmd = chain.step(np.zeros(chain.mapping.size), state, now + k * DT)
        assert cmd.mode == "damping"
        assert np.all(np.abs(cmd.position - prev) <= r + TOL)
        prev = cmd.position
    assert np.allclose(cmd.position, np.clip(q, chain.lower, chain.upper))  # 0.05 rad: within a step
    if gains == "commanded":
        assert (cmd.kp == 0).all() and np.allclose(cmd.kd, chain.damping_kd)
    else:
        assert np.array_equal(cmd.kp, chain.kp) and np.array_equal(cmd.kd, chain.kd)
    # a thigh encoder that jumps by 2.65 rad in one period (3x its 30 rad/s limit would take
    # it 1.8 rad) is implausible: its target holds while the others follow
    glitch = q + 0.01
    glitch[1] += 2.65
    state = nominal_state(chain, q=glitch, now=now + 4 * DT, dq=np.full(chain.n, 0.5))
    state.orientation = quat_from_roll_pitch(1.2, 0.0)
    cmd = chain.step(np.zeros(chain.mapping.size), state, now + 4 * DT)
    assert "plausibility" in chain.faults and "thigh" in chain.faults["plausibility"]
    assert cmd.position[1] == prev[1]
    assert np.allclose(np.delete(cmd.position, 1), np.delete(np.clip(glitch, chain.lower, chain.upper), 1))


def test_cartpole_damping_force_opposes_the_motion():
    spec = robot_spec("cartpole")
    chain = SafetyChain(spec, mapping_for(spec), DT)
    chain.reset(nominal_state(chain), 0.0)
    chain.step(np.array([np.nan]), nominal_state(chain), 0.0)
    for v in (-12.0, -1.0, 0.5, 3.0):
        cmd = chain.step(np.zeros(1), nominal_state(chain, dq=[v], now=DT), DT)
        assert cmd.mode == "damping"
        assert np.isclose(cmd.force[0], np.clip(-spec.safety.damping_kd * v, -chain.tau_max[0], chain.tau_max[0]))
    # a speed no cart reaches (beyond 3x its 5 m/s limit) is not acted on: no force
    cmd = chain.step(np.zeros(1), nominal_state(chain, dq=[-100.0], now=2 * DT), 2 * DT)
    assert cmd.force[0] == 0.0 and "plausibility" in chain.faults


@ONE_FILTER
@given(roll=st.floats(-3.1, 3.1), pitch=st.floats(-1.5, 1.5), limit=st.floats(0.1, 1.4),
       use_gravity=st.booleans())
@counted
def test_tilt_beyond_the_limit_latches_damping(roll, pitch, limit, use_gravity):
    assume(abs(max(abs(roll), abs(pitch)) - limit) > 1e-6)
    quat = quat_from_roll_pitch(roll, pitch)
    state = RobotState(np.zeros(1), np.zeros(1), orientation=None if use_gravity else quat)
    if use_gravity:
        state.gravity = projected_gravity(RobotState(np.zeros(1), np.zeros(1), orientation=quat)) * 9.81
    got_roll, got_pitch = roll_pitch(projected_gravity(state))
    assert math.isclose(got_roll, roll, abs_tol=1e-6) and math.isclose(got_pitch, pitch, abs_tol=1e-6)
    guard = TiltGuard(limit)
    chain = SafetyChain(robot_spec("cartpole"), mapping_for(robot_spec("cartpole")), DT)
    ctx = make_ctx(chain, np.zeros(1))
    ctx.state = state
    guard.supervise(ctx)
    tripped = max(abs(roll), abs(pitch)) > limit
    assert (ctx.mode == "damping") == tripped and (guard.latched is not None) == tripped
    ctx = make_ctx(chain, np.zeros(1))
    ctx.state = RobotState(np.zeros(1), np.zeros(1), orientation=np.array([1.0, 0, 0, 0]))  # upright again
    guard.supervise(ctx)
    assert (ctx.mode == "damping") == tripped  # latched
    guard.reset()
    ctx = make_ctx(chain, np.zeros(1))
    ctx.state = RobotState(np.zeros(1), np.zeros(1), orientation=np.array([1.0, 0, 0, 0]))
    guard.supervise(ctx)
    assert ctx.mode == "policy"


def test_go1_tilt_latches_damping_until_reset():
    chain, _, now = warm_chain("go1")
    limit = chain.limits.tilt_limit
    state = nominal_state(chain, now=now + DT)
    state.orientation = quat_from_roll_pitch(0.0, limit + 0.05)
    assert chain.step(np.zeros(12), state, now + DT).mode == "damping"
    assert "tilt" in chain.faults
    assert chain.step(np.zeros(12), nominal_state(chain, now=now + 2 * DT), now + 2 * DT).mode == "damping"
    chain.reset(nominal_state(chain, now=now + 3 * DT), now + 3 * DT)
    assert chain.step(np.zeros(12), nominal_state(chain, now=now + 4 * DT), now + 4 * DT).mode == "startup_ramp"


def _first_trip(chain, now, stamp, which, steps=200):
    for _ in range(steps):
        now += chain.dt
        state = nominal_state(chain, now=now)
        setattr(state, which, stamp)
        cmd = chain.step(np.zeros(chain.mapping.size), state, now)
        if cmd.mode != "policy":
            return now, cmd
    raise AssertionError("the watchdog never tripped")


WATCHED = [("cartpole", "joint_state_stamp"), ("panda", "joint_state_stamp"), ("go1", "joint_state_stamp"),
           ("go1", "imu_stamp"), ("panda", "command_stamp"), ("go1", "command_stamp")]


@pytest.mark.parametrize("name,which", WATCHED)
@SLOW
@given(timeout_fraction=st.floats(0.2, 1.0), stamp_age=st.floats(0.0, 0.99), dt=st.sampled_from([0.005, 0.02, 0.03]))
@counted
def test_watchdog_trips_within_one_control_period_after_the_timeout(name, which, timeout_fraction, stamp_age, dt):
    spec = robot_spec(name)
    # the ramp is not under test here: a spec without one gets to the policy at once
    spec = dataclasses.replace(spec, safety=dataclasses.replace(spec.safety, startup_ramp_time=0.0, fade_in_time=0.0))
    key = {"joint_state_stamp": "joint_states", "imu_stamp": "imu", "command_stamp": "command"}[which]
    limits = SafetyLimits.from_spec(spec)
    timeout = getattr(limits.watchdog, key) * timeout_fraction
    limits = limits.tighten(watchdog={key: timeout})
    chain = SafetyChain(spec, mapping_for(spec), dt, limits=limits)
    if which == "command_stamp":  # every robot in WATCHED with command_stamp has a command watchdog
        assert chain.filter("watchdog").command_timeout is not None, f"{name} has no command watchdog"
    _, now = run_until_policy(chain, np.zeros(chain.mapping.size))
    stamp = now - stamp_age * timeout  # the last message (still fresh now); none after it
    tripped_at, cmd = _first_trip(chain, now, stamp, which)
    late = tripped_at - (stamp + timeout)
    assert 0 < late <= dt + 1e-9, (late, dt)
    if which == "command_stamp":  # not latched: a hold that ends when commands return
        assert cmd.mode == "hold" and "watchdog" not in chain.faults
        back = chain.step(np.zeros(chain.mapping.size), nominal_state(chain, now=tripped_at + dt), tripped_at + dt)
        assert back.mode == "policy"
    else:  # latched fault mode until reset
        assert cmd.mode == spec.safety.fault_mode and "watchdog" in chain.faults
        again = chain.step(np.zeros(chain.mapping.size), nominal_state(chain, now=tripped_at + dt), tripped_at + dt)
        assert again.mode == spec.safety.fault_mode


@pytest.mark.parametrize("name,which", WATCHED)
def test_a_stamp_from_the_future_beyond_the_timeout_is_stale(name, which):
    """A clock mismatch (a stamp ahead of the node's clock by more than the timeout) cannot
    keep a dead sensor looking fresh: it trips the watchdog at once. A stamp ahead by less
    than the timeout (jitter between clocks) is fresh."""
    key = {"joint_state_stamp": "joint_states", "imu_stamp": "imu", "command_stamp": "command"}[which]
    chain, _, now = warm_chain(name)
    timeout = getattr(chain.limits.watchdog, key)
    now += chain.dt
    jitter = nominal_state(chain, now=now)
    setattr(jitter, which, now + 0.5 * timeout)
    assert chain.step(np.zeros(chain.mapping.size), jitter, now).mode == "policy"
    now += chain.dt
    ahead = nominal_state(chain, now=now)
    setattr(ahead, which, now + 2.0 * timeout)
    cmd = chain.step(np.zeros(chain.mapping.size), ahead, now)
    assert "watchdog" in cmd.interventions and cmd.mode != "policy", cmd.mode


def test_quadruped_holds_the_default_pose_when_commands_stop():
    chain, _, now = warm_chain("go1")
    q = chain.default.copy()
    for _ in range(400):
        now += DT
        state = nominal_state(chain, q=q, now=now)
        state.command_stamp = None  # never again
        cmd = chain.step(np.ones(12), state, now)
        q = cmd.position
    assert cmd.mode == "hold" and np.allclose(cmd.position, chain.default)


# ============================================================================= ramp and fade-in
@pytest.mark.parametrize("name", ["panda", "go1"])
def test_startup_ramp_starts_at_the_measured_pose_and_ends_at_the_default_pose(name):
    spec = robot_spec(name)
    chain = SafetyChain(spec, mapping_for(spec), DT)
    rng = np.random.default_rng(0)
    q0 = np.clip(chain.default + rng.uniform(-0.4, 0.4, chain.n), chain.lower, chain.upper)
    chain.reset(nominal_state(chain, q=q0), 0.0)
    now, q, outputs = 0.0, q0, []
    while True:
        cmd = chain.step(np.ones(chain.mapping.size), nominal_state(chain, q=q, now=now), now)
        if cmd.mode != "startup_ramp":
            break
        outputs.append(cmd.position)
        q, now = cmd.position, now + DT
    assert np.allclose(outputs[0], q0, atol=1e-12)  # starts at the measured pose
    assert np.allclose(outputs[-1], chain.default, atol=1e-9)  # ends at the default pose
    assert now >= chain.limits.startup_ramp_time - 1e-9  # and takes at least the ramp time
    dist = np.abs(np.array(outputs) - chain.default).max(axis=1)
    assert (np.diff(dist) <= 1e-12).all()  # monotonically closer
    assert cmd.mode == "policy" and np.allclose(cmd.position, chain.default)  # fade-in starts at the default


@pytest.mark.parametrize("velocity_scale", [0.8, 0.2])
def test_go1_stands_up_and_hands_over_to_the_policy_although_its_compliant_legs_sag(velocity_scale):
    """On the simulated go1 (kp 30) the calves sag ~0.15 rad below the targets under the robot's
    weight; the chain must still ramp to the default pose, keep the robot standing and hand
    over to the policy, however tight the velocity limit (a target-leads-measured bound of
    v_max*dt would let the PD hold only kp*v_max*dt of load: the robot would fold up)."""
    from roboreal.sim2real.nodes.sim_robot import SimRobot

    spec = robot_spec("go1")
    dt = 0.02
    chain = SafetyChain(spec, mapping_for(spec), dt, SafetyLimits.from_spec(spec).tighten(velocity_scale=velocity_scale))
    robot = SimRobot(spec, initial_pose="home")
    substeps = int(round(dt / robot.timestep))
    handed_over = None
    for k in range(int(5.0 / dt)):
        now = k * dt
        q, dq, _ = robot.joint_state()
        state = RobotState(position=q, velocity=dq, orientation=robot.imu().orientation_wxyz,
                           joint_state_stamp=now, imu_stamp=now, command_stamp=now)
        cmd = chain.step(np.zeros(chain.mapping.size), state, now)
        if cmd.mode == "policy" and handed_over is None:
            handed_over = now
        robot.set_targets(cmd.position)
        robot.step(substeps)
    assert handed_over is not None and handed_over <= chain.limits.startup_ramp_time + 0.5, handed_over
    assert robot.data.qpos[2] > 0.22, robot.data.qpos[2]  # the trunk is still up (standing: ~0.295 m)


@pytest.mark.parametrize("name", ["panda", "go1"])
def test_fade_in_blends_from_the_default_pose_to_the_policy_target(name):
    spec = robot_spec(name)
    chain = SafetyChain(spec, mapping_for(spec), DT)
    action = np.full(chain.mapping.size, 0.02)  # small enough for every rate limit
    policy_target = np.array(chain.mapping.offset) + np.array(chain.mapping.scale) * action
    fade = chain.limits.fade_in_time
    chain.reset(nominal_state(chain), 0.0)
    now, q, start = 0.0, chain.default, None
    for _ in range(2000):
        cmd = chain.step(action, nominal_state(chain, q=q, now=now), now)
        if cmd.mode == "policy":
            start = now if start is None else start
            w = 1.0 if fade == 0 else min(1.0, (now - start) / fade)
            assert np.allclose(cmd.position, chain.default + w * (policy_target - chain.default), atol=1e-9), w
            if w >= 1:
                break
        q, now = cmd.position, now + DT
    assert start is not None and w == 1.0


def test_report_counts_when_and_how_much_each_filter_intervened():
    spec = robot_spec("cartpole")
    chain = SafetyChain(spec, mapping_for(spec), DT)
    chain.reset(nominal_state(chain), 0.0)
    chain.step(np.array([1.0]), nominal_state(chain, now=0.02), 0.02)  # 1.5x the limit: clipped
    chain.step(np.array([3.0]), nominal_state(chain, now=0.04), 0.04)  # action clipped to 1
    r = chain.report()
    assert set(r) >= {"non_finite", "action_clip", "position_limit", "velocity_limit", "torque_limit",
                      "watchdog", "estop", "startup_ramp", "final_guard"}
    assert r["torque_limit"] == {"count": 2, "last_time": 0.04, "max_magnitude": pytest.approx(5.0)}
    assert r["action_clip"] == {"count": 1, "last_time": 0.04, "max_magnitude": pytest.approx(2.0)}
    assert r["non_finite"]["count"] == 0 and r["final_guard"]["count"] == 0


# ============================================================================= configuration
LOOSER = [
    ("joint_position_margin", lambda s: s.joint_position_margin / 2 - 1e-3, "safety.joint_position_margin"),
    ("velocity_scale", lambda s: min(1.0, s.velocity_scale + 0.05) if s.velocity_scale < 1 else 1.5,
     "safety.velocity_scale"),
    ("torque_scale", lambda s: 1.2, "safety.torque_scale"),
    ("max_target_rate", lambda s: s.max_target_rate * 2, "safety.max_target_rate"),
    ("startup_ramp_time", lambda s: s.startup_ramp_time - 0.5, "safety.startup_ramp_time"),
    ("fade_in_time", lambda s: s.fade_in_time - 0.5, "safety.fade_in_time"),
    ("watchdog", lambda s: {"joint_states": s.watchdog.joint_states * 2}, "safety.watchdog.joint_states"),
    ("watchdog", lambda s: {"command": s.watchdog.command + 1}, "safety.watchdog.command"),
]


@pytest.mark.parametrize("name", ROBOTS)
@pytest.mark.parametrize("key,loose,field", LOOSER, ids=[f for _, _, f in LOOSER])
def test_loosening_a_limit_is_refused_naming_the_field(name, key, loose, field):
    spec = robot_spec(name)
    base = SafetyLimits.from_spec(spec)
    with pytest.raises(ConfigError) as e:
        base.tighten(**{key: loose(spec.safety)})
    assert e.value.field == field and field in str(e.value)
    # a limits object built by hand is checked by the chain too
    if key == "watchdog":
        hand = dataclasses.replace(base, watchdog=dataclasses.replace(base.watchdog, **loose(spec.safety)))
    else:
        hand = dataclasses.replace(base, **{key: loose(spec.safety)})
    with pytest.raises(ConfigError) as e:
        SafetyChain(spec, mapping_for(spec), DT, limits=hand)
    assert e.value.field == field


def test_robot_specific_loosening_is_refused():
    for name, overrides, field in [
        ("go1", {"tilt_limit": 3.0}, "safety.tilt_limit"),
        ("go1", {"tilt_limit": None}, "safety.tilt_limit"),
        ("go1", {"watchdog": {"imu": None}}, "safety.watchdog.imu"),
        ("panda", {"workspace_max": [5.0, 5.0, 5.0]}, "safety.workspace_max[0]"),
        ("panda", {"workspace_min": None, "workspace_max": None}, "safety.workspace_min"),
    ]:
        with pytest.raises(ConfigError) as e:
            SafetyLimits.from_spec(robot_spec(name)).tighten(**overrides)
        assert e.value.field == field, (name, overrides, str(e.value))


@pytest.mark.parametrize("name", ROBOTS)
def test_tightening_is_accepted_and_enforced(name):
    spec = robot_spec(name)
    base = SafetyLimits.from_spec(spec)
    tight = base.tighten(velocity_scale=base.velocity_scale / 2, torque_scale=base.torque_scale / 2,
                         joint_position_margin=base.joint_position_margin + 0.01,
                         **{"watchdog.joint_states": base.watchdog.joint_states / 2})
    assert tight.velocity_scale == base.velocity_scale / 2 and tight.watchdog.command == base.watchdog.command
    chain = SafetyChain(spec, mapping_for(spec), DT, limits=tight)
    assert np.allclose(chain.v_max, spec.array("velocity_limit") * tight.velocity_scale)
    assert np.allclose(chain.lower, spec.lower + tight.joint_position_margin)
    assert tight.tighten() == tight


def test_bad_configuration_names_the_field():
    spec = robot_spec("cartpole")
    base = SafetyLimits.from_spec(spec)
    cases = [
        (lambda: base.tighten(velocity_scle=0.5), "safety.velocity_scle"),
        (lambda: base.tighten(fault_mode="hold"), "safety.fault_mode"),
        (lambda: base.tighten(max_target_rate="fast"), "safety.max_target_rate"),
        (lambda: base.tighten(max_target_rate=math.nan), "safety.max_target_rate"),
        (lambda: base.tighten(velocity_scale=0.0), "safety.velocity_scale"),
        (lambda: base.tighten(joint_position_margin=2.4), "safety.joint_position_margin"),
        (lambda: SafetyChain(spec, mapping_for(spec), 0.0), "dt"),
        (lambda: SafetyChain(spec, ActionMapping("joint_position_absolute", ("slider",), (1.0,), (0.0,)), DT),
         "action_mapping.type"),
        (lambda: SafetyChain(spec, ActionMapping("force", ("hinge",), (1.0,), (0.0,)), DT), "action_mapping.joints[0]"),
    ]
    for make, field in cases:
        with pytest.raises(ConfigError) as e:
            chain_or_limits = make()
            if isinstance(chain_or_limits, SafetyLimits):
                SafetyChain(spec, mapping_for(spec), DT, limits=chain_or_limits)
        assert e.value.field == field, str(e.value)


def test_wrong_shapes_are_a_fault_not_a_crash():
    spec = robot_spec("cartpole")
    chain = SafetyChain(spec, mapping_for(spec), DT)
    chain.reset(nominal_state(chain), 0.0)
    for action, state in [(np.zeros(3), nominal_state(chain)), ("left", nominal_state(chain)),
                          (np.zeros(1), RobotState(np.zeros(5), np.zeros(5), joint_state_stamp=0.0)),
                          (np.zeros(1), None)]:
        cmd = chain.step(action, state, 0.0)
        assert cmd.mode == "damping" and np.isfinite(cmd.force).all()
    assert "non_finite" in chain.faults


@given(action=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                        st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=2)),
       mode=st.sampled_from(sorted(MODES)))
@settings(max_examples=300, deadline=None)
def test_gripper_command_is_finite_within_its_range_and_only_under_the_policy(action, mode):
    """Any gripper action in any mode: nothing (keep the last command) unless the chain runs
    the policy, and then a finite opening within [closed, open]; bad values are counted."""
    spec = robot_spec("panda")
    chain = SafetyChain(spec, mapping_for(spec), DT)
    chain.mode = mode
    before = chain.report()["gripper"]["count"]
    width = chain.gripper(action, now=1.0)
    if mode != "policy":
        assert width is None
        return
    lo, hi = chain.gripper_range
    try:
        a = float(action)
    except (TypeError, ValueError, OverflowError):
        a = math.nan
    if not math.isfinite(a):
        assert width is None and chain.report()["gripper"]["count"] == before + 1
        return
    assert width is not None and math.isfinite(width) and lo <= width <= hi
    if abs(a) > 1:
        assert chain.report()["gripper"]["count"] == before + 1
        assert width == (spec.gripper.open if a > 0 else spec.gripper.closed)


def test_gripper_follows_the_chain_mode_through_a_real_startup():
    spec = robot_spec("panda")
    chain = SafetyChain(spec, mapping_for(spec), DT)
    now, q, widths = 0.0, chain.default, []
    chain.reset(nominal_state(chain), 0.0)
    for _ in range(400):
        cmd = chain.step(np.zeros(chain.mapping.size), nominal_state(chain, q=q, now=now), now)
        widths.append((cmd.mode, chain.gripper(-1.0, now)))
        q, now = cmd.position, now + DT
    assert all(w is None for m, w in widths if m != "policy")
    assert any(m == "policy" for m, _ in widths)
    assert all(w == spec.gripper.closed for m, w in widths if m == "policy")
    with pytest.raises(ValueError, match="no gripper"):
        SafetyChain(robot_spec("go1"), mapping_for(robot_spec("go1")), DT).gripper(0.0)


# ============================================================================= plausibility, resets
@pytest.mark.parametrize("field,expect", [
    ("position", "joint_states.position[FR_calf_joint] = -10"),
    ("huge_position", "joint_states.position[FR_calf_joint] = 1e+308"),
    ("velocity", "joint_states.velocity[FR_calf_joint] = 1e+308"),
    ("gyro", "imu.angular_velocity"),
    ("accel", "imu.linear_acceleration"),
    ("quat", "imu.orientation has norm 3"),
])
def test_implausible_readings_latch_the_fault_mode_naming_the_field(field, expect):
    """Finite but impossible readings: the fault mode, latched, with the field and value in the
    reason; the reading is not used (the targets hold within the rate limit)."""
    chain, last, now = warm_chain("go1")
    state = nominal_state(chain, q=last.position, now=now + DT)
    state.angular_velocity, state.linear_acceleration = np.zeros(3), np.array([0.0, 0.0, 9.81])
    if field == "position":
        state.position[2] = -10.0
    elif field == "huge_position":
        state.position[2] = 1e308
    elif field == "velocity":
        state.velocity[2] = 1e308
    elif field == "gyro":
        state.angular_velocity = np.array([1e30, 0.0, 0.0])
    elif field == "accel":
        state.linear_acceleration = np.array([0.0, 0.0, 500.0])
    else:
        state.orientation = 3 * state.orientation
    with np.errstate(all="raise"):  # no overflow anywhere on the way
        cmd = chain.step(np.zeros(chain.mapping.size), state, now + DT)
    assert cmd.mode == "damping" and expect in chain.faults["plausibility"], chain.faults
    check_command(chain, cmd, state, last.position)
    # healthy readings again: still latched until reset
    healthy = nominal_state(chain, q=cmd.position, now=now + 2 * DT)
    assert chain.step(np.zeros(chain.mapping.size), healthy, now + 2 * DT).mode == "damping"
    chain.reset(nominal_state(chain, q=cmd.position, now=now + 3 * DT), now + 3 * DT)
    assert "plausibility" not in chain.faults


def test_plausible_readings_at_the_bounds_do_not_fault():
    chain, last, now = warm_chain("go1")
    p = chain.spec.safety.plausibility
    q = last.position.copy()
    state = nominal_state(chain, q=q, now=now + DT, dq=0.99 * p.velocity_factor * chain.spec.array("velocity_limit"))
    state.angular_velocity = np.full(3, 0.99 * p.angular_velocity)
    state.linear_acceleration = np.full(3, -0.99 * p.linear_acceleration)
    state.orientation = state.orientation * (1 + 0.9 * p.quaternion_norm_tolerance)
    chain.step(np.zeros(chain.mapping.size), state, now + DT)
    assert "plausibility" not in chain.faults


@pytest.mark.parametrize("name", ["panda", "go1"])
@pytest.mark.parametrize("event", ["reset", "release_estop"])
def test_a_reset_or_release_ramps_from_the_last_command_never_jumps(name, event):
    """Before: a reset re-anchored at the measured pose, so the next command jumped there.
    Now the ramp starts from the last command; the measured pose 0.5 rad away only matters
    through the rate-limited targets."""
    chain, last, now = warm_chain(name)
    r = chain.max_rate * DT
    if event == "release_estop":
        chain.estop("test")
    prev = last.position
    away = np.clip(prev + 0.5, chain.lower, chain.upper)
    for k in range(1, 40):
        t = now + k * DT
        state = nominal_state(chain, q=away if k < 20 else prev, now=t)
        if k == 5:
            chain.reset(state, t) if event == "reset" else chain.release_estop(state, t)
        cmd = chain.step(np.zeros(chain.mapping.size), state, t)
        assert np.all(np.abs(cmd.position - prev) <= r * (1 + TOL) + TOL), (k, cmd.mode, cmd.position - prev)
        prev = cmd.position
    assert "estop" not in chain.faults


def test_release_estop_releases_only_the_estop_and_reset_never_does():
    chain, last, now = warm_chain("go1")
    chain.estop("operator")
    bad = nominal_state(chain, q=last.position, now=now + DT)
    bad.position[0] = np.nan
    chain.step(np.zeros(chain.mapping.size), bad, now + DT)
    assert set(chain.faults) == {"estop", "non_finite"}
    chain.reset(nominal_state(chain, q=last.position, now=now + 2 * DT), now + 2 * DT)
    assert set(chain.faults) == {"estop"}
    chain.step(np.zeros(chain.mapping.size), bad, now + 3 * DT)
    chain.release_estop(nominal_state(chain, q=last.position, now=now + 4 * DT), now + 4 * DT)
    assert set(chain.faults) == {"non_finite"}


def test_check_state_names_what_is_wrong_without_latching():
    chain, last, now = warm_chain("panda")
    state = nominal_state(chain, q=last.position, now=now)
    assert chain.check_state(state, now) == []
    state.position[6] = -10.0
    state.velocity[0] = np.inf
    why = chain.check_state(state, now)
    assert any("panda_joint7" in w and "-10" in w for w in why) and any("velocity" in w for w in why), why
    assert chain.faults == {}


def test_screen_latches_a_bad_sample_even_if_a_good_one_follows():
    """A reading is screened when it arrives: one NaN or impossible sample between two steps
    latches the fault mode, though the step itself only sees the good one after it."""
    for bad_value, guard in ((np.nan, "non_finite"), (-10.0, "plausibility")):
        chain, last, now = warm_chain("go1")
        bad = nominal_state(chain, q=last.position, now=now)
        bad.position[4] = bad_value
        assert chain.screen(bad, now) and guard in chain.faults and "on arrival" in chain.faults[guard]
        cmd = chain.step(np.zeros(chain.mapping.size), nominal_state(chain, q=last.position, now=now + DT), now + DT)
        assert cmd.mode == "damping"
        check_command(chain, cmd, nominal_state(chain, q=last.position, now=now + DT), last.position)


def test_the_wire_checker_catches_each_kind_of_violation():
    """The DDS tests are only as good as their checker: each invariant, broken on purpose, is
    counted under its own name; a clean stream from the chain itself counts nothing."""
    from roboreal.sim2real.safety.wire import WireChecker

    chain, last, now = warm_chain("go1")
    spec, n = chain.spec, chain.n
    ok = WireChecker(spec, DT)
    prev = last.position
    for k in range(1, 30):  # the chain's own commands, with their audits: clean
        state = nominal_state(chain, q=prev, now=now + k * DT, dq=np.full(n, 3.0 * (-1) ** k))
        cmd = chain.step(np.full(chain.mapping.size, (-1) ** k), state, now + k * DT)
        audit = {"seq": k, "command": cmd.position, "kp": cmd.kp, "kd": cmd.kd, "q": cmd.q, "dq": cmd.dq,
                 "interventions": 0, "gains_commanded": 0.0}
        assert ok.check(cmd.position, audit) == []
        prev = cmd.position
    bad = WireChecker(spec, DT)
    p = chain.default.copy()
    audit = lambda seq, cmd, q, dq: {"seq": seq, "command": cmd, "kp": chain.kp, "kd": chain.kd,  # noqa: E731
                                     "q": q, "dq": dq, "interventions": 0}
    assert bad.check(p, audit(1, p, p, np.zeros(n))) == []
    jump = p.copy()
    jump[0] += 0.5  # beyond 0.3 rad per step
    assert any(v.startswith("rate") for v in bad.check(jump, audit(2, jump, jump, np.zeros(n))))
    assert any(v.startswith("finite") for v in bad.check(np.full(n, np.nan)))
    out = jump.copy()
    out[2] = spec.upper[2]  # inside the hardware limit, outside the margin
    assert any(v.startswith("position_limits") for v in bad.check(out))
    # torque (fixed gains): the hip measured 1.5 rad away (20 * 1.5 = 30 Nm > 21.3 Nm) and the target
    # not moved towards it within the rate limit
    q = out.copy()
    q[0] -= 1.5
    same = out.copy()
    assert any(v.startswith("torque") for v in bad.check(same, audit(3, same, q, np.zeros(n))))
    assert any(v.startswith("audit") for v in bad.check(same, audit(9, same, same, np.zeros(n))))
    s = bad.summary()["violations"]
    assert all(s[k] >= 1 for k in ("finite", "position_limits", "rate", "torque", "audit")), s


def test_a_reset_on_a_partly_unreadable_pose_before_the_first_command_anchors_at_once():
    """Found by the property test above (go1, CI): before the first command, a reset with one
    joint unreadable used to defer the anchor to the next step, which then jumped from the
    reported last command to the measured pose of the other joints (1.0 rad, limit 0.3)."""
    spec = robot_spec("go1")
    chain = SafetyChain(spec, mapping_for(spec, "delta"), DT, gains="commanded")
    chain.reset(nominal_state(chain), 0.0)
    q = np.zeros(chain.n)
    q[0] = np.inf
    state = nominal_state(chain, q=q)
    chain.reset(state, 0.0)
    reported = chain.previous_command.copy()
    finite = np.isfinite(q)
    assert np.allclose(reported[finite], np.clip(q, chain.lower, chain.upper)[finite])  # anchored on the measurement
    cmd = chain.step(None, state, 0.0)
    assert cmd.mode == "damping"
    assert (np.abs(cmd.position - reported) <= chain.max_rate * DT + 1e-9).all()
