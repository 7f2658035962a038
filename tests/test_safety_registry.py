"""The safety chain is built from a registry, and robots declare behaviour, not a kind.

A safety limit is one `SafetySpec` field plus one registered filter: the chain takes its
filters from the registry in their declared order, and every limit has exactly one owner.
(A field cannot be added to `SafetySpec` at test time, since `SafetyLimits` is derived
from it at import, so the toy filter below enforces a limit of its own.) The nodes and the
chain ask the spec what a robot does (`reads_imu`, `stands_without_command`,
`has_end_effector`, `command_inputs`); the values for the shipped robots are pinned here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roboreal.control.action import ActionMapping
from roboreal.robots.spec import load_robot
from roboreal.sim2real.safety import (
    LIMIT_KEYS,
    RobotState,
    SafetyChain,
    SafetyFilter,
    StepContext,
    base,
    register,
    registered_filters,
)

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = {"panda": "panda", "go1": "go1", "cartpole": "cartpole",
          "ur5e": str(ROOT / "examples/robots/ur5e"), "a1": str(ROOT / "examples/robots/a1")}
DT = 0.02

SHIPPED_ORDER = ["non_finite", "plausibility", "action_clip", "action_map", "rate_limit", "position_limit",
                 "velocity_limit", "torque_limit", "workspace", "tilt", "watchdog", "estop", "startup_ramp"]


def chain_for(robot: str) -> SafetyChain:
    spec = load_robot(ROBOTS[robot])
    names = tuple(spec.actuated_names)
    n = len(names)
    if spec.control_mode == "force":
        mapping = ActionMapping("force", names, tuple(spec.array("torque_limit")), (0.0,) * n)
    else:
        half = (spec.upper - spec.lower) / 2
        mapping = ActionMapping("joint_position_absolute", names, tuple(half), tuple(spec.array("default")))
    return SafetyChain(spec, mapping, dt=DT)


def healthy_state(chain: SafetyChain, q: np.ndarray, now: float) -> RobotState:
    """A perfectly tracking robot at `q`, every stream fresh."""
    return RobotState(position=np.array(q, dtype=float), velocity=np.zeros(chain.n),
                      orientation=np.array([1.0, 0.0, 0.0, 0.0]), joint_state_stamp=now, imu_stamp=now,
                      command_stamp=now)


# ----------------------------------------------------------------------------- the registry
def test_the_registry_lists_the_shipped_filters_in_chain_order():
    classes = registered_filters()
    assert [c.name for c in classes] == SHIPPED_ORDER
    orders = [c.order for c in classes]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)


@pytest.mark.parametrize("robot, absent", [("panda", {"tilt"}), ("ur5e", {"tilt"}), ("go1", {"workspace"}),
                                           ("a1", {"workspace"}), ("cartpole", {"tilt", "workspace"})])
def test_each_chain_builds_the_registered_filters_its_robot_needs(robot, absent):
    chain = chain_for(robot)
    assert [f.name for f in chain.filters] == [n for n in SHIPPED_ORDER if n not in absent]


def test_every_safety_limit_has_exactly_one_owner():
    """Each robot.yaml ``safety:`` limit is enforced by one registered filter (or the chain
    itself), so a newcomer finds where a limit acts, and a new limit without a filter fails here."""
    owners: dict[str, list[str]] = {key: [] for key in LIMIT_KEYS}
    for cls in [*registered_filters(), SafetyChain]:
        for key in cls.enforces:
            assert key in owners, f"{cls.__name__}.enforces names {key!r}, which is not a safety limit"
            owners[key].append(cls.__name__)
    assert {k: v for k, v in owners.items() if len(v) != 1} == {}


class ToyJointCap(SafetyFilter):
    """A toy limit: the first joint's target never above `cap` (position control only)."""

    name = "toy_joint_cap"
    order = 85  # after the torque bound, before the workspace box
    cap = 0.05  # rad above the default pose

    def __init__(self, cap: float):
        self.limit = cap

    @classmethod
    def build(cls, chain: SafetyChain) -> ToyJointCap | None:
        return cls(chain.default[0] + cls.cap) if chain.position_control else None

    def apply(self, ctx: StepContext) -> None:
        if ctx.value[0] > self.limit:
            ctx.intervene(self.name, ctx.value[0] - self.limit)
            ctx.value = ctx.value.copy()
            ctx.value[0] = self.limit


@pytest.fixture
def own_registry(monkeypatch):
    """A copy of the registry for this test: what it registers is gone afterwards."""
    monkeypatch.setattr(base, "FILTERS", dict(base.FILTERS))


def test_a_registered_filter_joins_every_chain_at_its_order(own_registry):
    register(ToyJointCap)
    assert "toy_joint_cap" not in [f.name for f in chain_for("cartpole").filters]  # force control: built to None

    chain = chain_for("panda")
    names = [f.name for f in chain.filters]
    assert names.index("torque_limit") + 1 == names.index("toy_joint_cap") == names.index("workspace") - 1
    # the policy pushes every joint up; the toy cap holds the first one
    action = np.ones(chain.mapping.size)
    now, q = 0.0, chain.default.copy()
    chain.reset(healthy_state(chain, q, now), now)
    for _ in range(int(6.0 / DT)):
        now += DT
        cmd = chain.step(action, healthy_state(chain, q, now), now)
        q = cmd.position
        assert q[0] <= chain.default[0] + ToyJointCap.cap + 1e-12
    assert cmd.mode == "policy"
    assert q[1] > chain.default[1] + ToyJointCap.cap  # the other joints went on
    assert chain.report()["toy_joint_cap"]["count"] > 0


def test_register_refuses_a_taken_name_or_order(own_registry):
    class SameOrder(ToyJointCap):
        name = "same_order"
        order = 80  # the torque bound's

    class SameName(ToyJointCap):
        name = "rate_limit"

    class NoOrder(ToyJointCap):
        name = "no_order"
        order = None

    for cls, why in ((SameOrder, "order 80 is taken"), (SameName, "named 'rate_limit'"), (NoOrder, "sets no order")):
        with pytest.raises(ValueError, match=why):
            register(cls)


# ----------------------------------------------------------------------------- robot behaviour
@pytest.mark.parametrize("robot, reads_imu, stands, end_effector, inputs", [
    ("panda", False, False, True, ("goal",)),
    ("ur5e", False, False, True, ("goal",)),
    ("go1", True, True, False, ("cmd_vel",)),
    ("a1", True, True, False, ("cmd_vel",)),
    ("cartpole", False, False, False, ()),
])
def test_what_each_shipped_robot_declares(robot, reads_imu, stands, end_effector, inputs):
    spec = load_robot(ROBOTS[robot])
    assert spec.reads_imu is reads_imu  # the policy node waits for IMU readings
    assert spec.stands_without_command is stands  # a stale command: default pose, not the last target
    assert spec.has_end_effector is end_effector  # the sim bridge publishes ~/ee_pose
    assert spec.command_inputs == inputs  # teleop drives these; the chain's command watchdog watches them


@pytest.mark.parametrize("robot", ["go1", "panda"])
def test_a_stale_command_stands_a_robot_on_feet_and_holds_the_others(robot):
    chain = chain_for(robot)
    action = np.full(chain.mapping.size, 0.3)
    now, q = 0.0, chain.default.copy()
    chain.reset(healthy_state(chain, q, now), now)
    for _ in range(int(4.0 / DT)):  # ramp, fade-in, then the policy moves away from the default pose
        now += DT
        q = chain.step(action, healthy_state(chain, q, now), now).position
    moved = q.copy()
    assert np.abs(moved - chain.default).max() > 0.05
    stale = chain.limits.watchdog.command
    for _ in range(int(3.0 / DT)):
        now += DT
        state = healthy_state(chain, q, now)
        state.command_stamp = now - 2 * stale  # commands stopped
        cmd = chain.step(action, state, now)
        q = cmd.position
    assert cmd.mode == "hold"
    expected = chain.default if chain.spec.stands_without_command else moved
    np.testing.assert_allclose(q, expected, atol=1e-9)
