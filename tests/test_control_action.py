"""The one action mapping (`roboreal.control.action`): numpy and torch agree, bounded
position targets are clipped exactly as the safety chain's PositionLimit clips them, every
task's actuator controls are the mapping's output, the gripper mapping is the chain's, and
the manifest form round-trips (old manifests without bounds included)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

import roboreal
from roboreal.control.action import ActionMapping, GripperMapping
from roboreal.robots.spec import load_robot
from roboreal.sim2real.nodes.observation import applied_action
from roboreal.sim2real.safety import PositionLimit, RobotState, SafetyChain, StepContext

DT = 0.02
TYPES = ("joint_position_absolute", "joint_position_delta", "force")


def mapping_of(kind: str, bounded: bool = True) -> ActionMapping:
    bounds = ((-0.5, -1.0, 0.0), (0.5, 1.0, 0.4)) if bounded and kind != "force" else (None, None)
    return ActionMapping(kind, ("a", "b", "c"), (0.25, 0.5, 2.0), (0.1, -0.2, 0.3), *bounds)


def spied(monkeypatch, cls, name: str) -> list:
    """Record every call of `cls.name` (args after self), still calling it."""
    calls, original = [], getattr(cls, name)

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, spy)
    return calls


# ----------------------------------------------------------------------------- the formula
@pytest.mark.parametrize("kind", TYPES)
def test_numpy_and_torch_give_the_same_command_and_action(kind):
    m = mapping_of(kind)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (64, 3))
    previous = rng.uniform(-1.5, 1.5, (64, 3))  # some already beyond the bounds
    prev = previous if kind == "joint_position_delta" else None
    out_np = m.to_command(actions, prev)
    out_t = m.to_command(torch.as_tensor(actions), None if prev is None else torch.as_tensor(prev))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    # float32 tensors stay float32 and agree to float32 precision
    out_32 = m.to_command(torch.as_tensor(actions, dtype=torch.float32),
                          None if prev is None else torch.as_tensor(prev, dtype=torch.float32))
    assert out_32.dtype == torch.float32
    np.testing.assert_allclose(out_32.numpy(), out_np, atol=1e-6)
    # the formula itself
    base = prev if prev is not None else np.array(m.offset)
    expect = base + np.array(m.scale) * actions
    if kind != "force":
        expect = np.minimum(np.maximum(expect, m.lower), m.upper)
        assert ((out_np == m.lower) | (out_np == m.upper)).any()  # the bounds were reached
    np.testing.assert_array_equal(out_np, expect)
    # the inverse, numpy and torch alike
    back_np = m.to_action(out_np, prev)
    back_t = m.to_action(torch.as_tensor(out_np), None if prev is None else torch.as_tensor(prev))
    np.testing.assert_array_equal(back_t.numpy(), back_np)
    assert np.all(np.abs(back_np) <= 1.0)
    inside = (out_np == expect) if kind == "force" else ((out_np > m.lower) & (out_np < m.upper))
    np.testing.assert_allclose(back_np[inside], actions[inside], atol=1e-12)


def test_unbounded_mapping_does_not_clip_and_force_has_no_bounds():
    m = mapping_of("joint_position_absolute", bounded=False)
    assert not m.bounded
    np.testing.assert_allclose(m.to_command(np.ones(3)), np.array(m.offset) + m.scale)
    with pytest.raises(ValueError, match="no position bounds"):
        ActionMapping("force", ("a",), (1.0,), (0.0,), (-1.0,), (1.0,))
    with pytest.raises(ValueError, match="together"):
        ActionMapping("joint_position_delta", ("a",), (1.0,), (0.0,), (-1.0,), None)
    with pytest.raises(ValueError, match="unknown type"):
        ActionMapping("joint_velocity", ("a",), (1.0,), (0.0,))
    with pytest.raises(ValueError, match="previous target"):
        mapping_of("joint_position_delta").to_command(np.zeros(3))


def test_applied_action_inverts_the_action_mapping():
    """last_action_source=applied: the chain's output mapped back to the action space."""
    a = np.array([0.3, -0.7, 1.0])
    absolute = ActionMapping("joint_position_absolute", ("a", "b", "c"), (0.25,) * 3, (0.1, -0.2, 0.3))
    np.testing.assert_allclose(applied_action(absolute, absolute.to_command(a), None, a), a)
    np.testing.assert_allclose(absolute.to_action(absolute.to_command(a)), a)
    delta = ActionMapping("joint_position_delta", ("a", "b", "c"), (0.05,) * 3, (0.0,) * 3)
    prev = np.array([0.5, 0.5, 0.5])
    np.testing.assert_allclose(applied_action(delta, delta.to_command(a, prev), prev, a), a)
    np.testing.assert_allclose(applied_action(delta, prev, None, a), 0.0)  # no previous output: no delta
    force = ActionMapping("force", ("a",), (10.0,), (0.0,))
    # a rate-limited / clipped output is what the robot did: e.g. the chain allowed 2 N of 7
    np.testing.assert_allclose(applied_action(force, np.array([2.0]), None, np.array([0.7, 0.4])), [0.2, 0.4])
    # the inverse clips to the trained range
    np.testing.assert_allclose(force.to_action(np.array([25.0])), [1.0])
    np.testing.assert_allclose(force.to_action(torch.tensor([[-25.0]])), [[-1.0]])


# ----------------------------------------------------------------------------- robots and the chain
@pytest.mark.parametrize("name,kind", [("panda", "joint_position_delta"), ("go1", "joint_position_absolute"),
                                       ("cartpole", "force")])
def test_for_robot_takes_joints_offset_and_the_chains_bounds_from_the_spec(name, kind):
    spec = load_robot(name)
    m = ActionMapping.for_robot(spec, kind, 0.3)
    assert m.joints == tuple(spec.actuated_names) and m.scale == (0.3,) * m.size
    if kind == "force":
        assert m.lower is None and m.upper is None and m.offset == (0.0,)
        return
    expect_offset = spec.array("default") if kind == "joint_position_absolute" else np.zeros(m.size)
    np.testing.assert_array_equal(m.offset, expect_offset)
    chain = SafetyChain(spec, m, DT)
    np.testing.assert_array_equal(m.lower, chain.lower)  # the very floats the chain clips to
    np.testing.assert_array_equal(m.upper, chain.upper)
    with pytest.raises(ValueError, match="not an actuated joint"):
        ActionMapping.for_robot(spec, kind, 0.3, joints=("nope",))


def _position_limit_output(chain: SafetyChain, value: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, dict]:
    ctx = StepContext(now=0.0, dt=chain.dt, action=None, q=np.full(chain.n, np.nan), dq=np.full(chain.n, np.nan),
                      state=None, prev=prev, position_control=True, kp=chain.kp.copy(), kd=chain.kd.copy(),
                      value=np.asarray(value, dtype=np.float64))
    PositionLimit(chain.lower, chain.upper).apply(ctx)
    return ctx.value, ctx.interventions


def test_delta_clipping_at_the_margin_equals_the_chains_position_limit():
    spec = load_robot("panda")
    m = ActionMapping.for_robot(spec, "joint_position_delta", 0.05)
    chain = SafetyChain(spec, m, DT)
    prev = chain.default.copy()
    prev[0], prev[3] = chain.upper[0] - 0.01, chain.lower[3] + 0.02  # near the margin
    a = np.zeros(7)
    a[0], a[3], a[5] = 1.0, -1.0, 0.5  # joints 0 and 3 beyond the margin, joint 5 inside
    unclipped = prev + 0.05 * a
    expect, interventions = _position_limit_output(chain, unclipped, prev)
    assert "position_limit" in interventions  # the target was beyond the limit
    np.testing.assert_array_equal(m.to_command(a, prev), expect)
    np.testing.assert_array_equal(m.to_command(torch.as_tensor(a), torch.as_tensor(prev)).numpy(), expect)
    assert expect[0] == chain.upper[0] and expect[3] == chain.lower[3] and expect[5] == unclipped[5]


def _walk(chain: SafetyChain, joint: int, steps: int) -> list[np.ndarray]:
    """Drive a perfectly tracking robot with +1 on `joint` (the policy in charge)."""
    now, q, out = 0.0, chain.default.copy(), []
    state = RobotState(position=q, velocity=np.zeros(chain.n), joint_state_stamp=now, command_stamp=now)
    chain.reset(state, now)
    a = np.zeros(chain.mapping.size)
    for _ in range(steps):
        state = RobotState(position=q, velocity=np.zeros(chain.n), joint_state_stamp=now, command_stamp=now)
        cmd = chain.step(a, state, now)
        if cmd.mode == "policy" and "startup_ramp" not in cmd.interventions:
            a[joint] = 1.0
        out.append(cmd.position.copy())
        q, now = cmd.position, now + DT
    return out


def test_a_chain_with_the_bounded_mapping_commands_what_one_with_an_old_mapping_clips_to(monkeypatch):
    """Bounded mapping (ActionMap clips) vs an old manifest's mapping without bounds
    (PositionLimit clips): the same commands, step by step, up to and at the limit; and
    ActionMap maps with the mapping's own `to_command`."""
    spec = load_robot("panda")
    bounded = ActionMapping.for_robot(spec, "joint_position_delta", 0.05)
    old = ActionMapping.from_dict({k: v for k, v in bounded.to_dict().items() if k not in ("lower", "upper")})
    assert not old.bounded
    calls = spied(monkeypatch, ActionMapping, "to_command")
    joint = 6  # the wrist: turning it keeps the end-effector inside the workspace box
    steps = 500
    new_out = _walk(SafetyChain(spec, bounded, DT), joint, steps)
    assert calls, "ActionMap must map with ActionMapping.to_command"
    chain_old = SafetyChain(spec, old, DT)
    old_out = _walk(chain_old, joint, steps)
    np.testing.assert_array_equal(np.array(new_out), np.array(old_out))
    assert new_out[-1][joint] == bounded.upper[joint]  # reached the limit minus margin
    assert chain_old.report()["position_limit"]["count"] > 0


# ----------------------------------------------------------------------------- the tasks
def make_env(task: str, **overrides):
    return roboreal.make(task, num_envs=3, randomization={"enabled": False}, **overrides)


def capture_ctrl(env) -> list:
    seen, step = [], env.sim.step

    def spy(ctrl):
        seen.append(ctrl.clone() if isinstance(ctrl, torch.Tensor) else np.array(ctrl))
        return step(ctrl)

    env.sim.step = spy
    return seen


def test_go1_ctrl_is_the_mapping_and_clipped_at_the_margin():
    env = make_env("go1-walk", action_scale=2.0)  # large enough to reach the bounds
    try:
        m = env.action_mapping
        assert m.type == "joint_position_absolute" and m.bounded
        seen = capture_ctrl(env)
        a = torch.rand(3, env.action_size, generator=torch.Generator().manual_seed(1)) * 2 - 1
        a[0] = 1.0
        env.step(a)
        ctrl = seen[-1]
        torch.testing.assert_close(ctrl, m.to_command(a), rtol=0, atol=0)
        upper = torch.tensor(m.upper, dtype=torch.float32)
        assert torch.all(ctrl[0] <= upper) and torch.any(ctrl[0] == upper)
        spec = env.robot
        chain = SafetyChain(spec, m, DT)
        expect, _ = _position_limit_output(chain, spec.array("default") + 2.0 * a[0].double().numpy(), chain.default)
        np.testing.assert_allclose(ctrl[0].double().numpy(), expect, atol=1e-6)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["panda-reach", "panda-pick"])
def test_panda_ctrl_is_the_mapping_and_clipped_at_the_margin(task):
    env = make_env(task)
    try:
        m = env.action_mapping
        assert m.type == "joint_position_delta" and m.bounded
        seen = capture_ctrl(env)
        upper = torch.tensor(m.upper, dtype=torch.float32)
        env.targets[0, 0] = upper[0] - 0.01  # next to the margin
        a = torch.zeros(3, env.action_size)
        a[:, 0], a[1, 2], a[2, 5] = 1.0, -0.5, 0.3
        prev = env.targets.clone()
        env.step(a)
        arm = seen[-1][:, env.arm_act]
        expect = m.to_command(a[:, :m.size], prev)
        torch.testing.assert_close(arm, expect, rtol=0, atol=0)
        assert arm[0, 0] == upper[0]  # clipped at limit - margin, as the chain clips
    finally:
        env.close()


def test_cartpole_ctrl_is_the_mapping_continuous_and_discrete():
    env = make_env("cartpole-balance")
    try:
        seen = capture_ctrl(env)
        a = torch.tensor([[0.3], [-1.0], [0.75]])
        env.step(a)
        torch.testing.assert_close(seen[-1], env.action_mapping.to_command(a), rtol=0, atol=0)
        assert env.action_mapping.type == "force" and not env.action_mapping.bounded
    finally:
        env.close()
    env = make_env("cartpole-balance-discrete")
    try:
        seen = capture_ctrl(env)
        env.step(torch.tensor([0, 1, 1]))
        expect = env.action_mapping.to_command(torch.tensor([[-1.0], [1.0], [1.0]]))
        torch.testing.assert_close(seen[-1], expect, rtol=0, atol=0)
    finally:
        env.close()


def test_panda_pick_gripper_is_the_chains_gripper(monkeypatch):
    env = make_env("panda-pick")
    try:
        chain = SafetyChain(env.robot, env.action_mapping, DT)
        chain.mode = "policy"  # the chain sets the gripper only while it runs the policy
        calls = spied(monkeypatch, GripperMapping, "to_command")
        seen = capture_ctrl(env)
        grip = torch.tensor([-1.0, 0.2, 1.0])
        a = torch.zeros(3, env.action_size)
        a[:, -1] = grip
        env.step(a)
        assert calls  # the env maps with GripperMapping
        n_env = len(calls)
        width = seen[-1][:, env.gripper_act]
        for i, g in enumerate(grip.tolist()):
            w = chain.gripper(g, now=0.0)
            assert w is not None and abs(float(width[i]) - w) < 1e-7
        assert len(calls) == n_env + 3  # ... and so does the chain
        gm = GripperMapping.for_robot(env.robot)
        assert chain.gripper(0.5, now=0.0) == gm.to_command(0.5)
        assert gm.to_command(3.0) == gm.open and gm.to_command(-3.0) == gm.closed
        np.testing.assert_allclose(gm.to_command(np.array([-2.0, 0.0, 2.0])),
                                   [gm.closed, (gm.open + gm.closed) / 2, gm.open])
    finally:
        env.close()


# ----------------------------------------------------------------------------- the manifest
@pytest.mark.parametrize("kind", TYPES)
def test_to_dict_from_dict_round_trip(kind):
    m = mapping_of(kind)
    d = m.to_dict()
    assert ("lower" in d) == (kind != "force")
    again = ActionMapping.from_dict(yaml.safe_load(yaml.safe_dump(d)))
    assert again == m
    # the manifest's action section carries more keys; they are ignored
    assert ActionMapping.from_dict({**d, "size": 4, "space": "continuous", "extra": ["gripper"]}) == m


def test_from_dict_of_an_old_manifest_without_bounds_does_not_clip():
    old = {"type": "joint_position_delta", "joints": ["a", "b"], "scale": [0.5, 0.5], "offset": [0.0, 0.0]}
    m = ActionMapping.from_dict(old)
    assert not m.bounded and m.to_dict() == old
    np.testing.assert_allclose(m.to_command(np.array([1.0, -1.0]), np.array([10.0, -10.0])), [10.5, -10.5])


def test_env_mapping_survives_a_copy_and_yaml():
    spec = load_robot("panda")
    m = ActionMapping.for_robot(spec, "joint_position_delta", 0.05)
    m.to_command(torch.zeros(7), torch.zeros(7))  # fills the tensor cache
    assert copy.deepcopy(m) == m
    assert ActionMapping.from_dict(yaml.safe_load(yaml.safe_dump(m.to_dict()))) == m
