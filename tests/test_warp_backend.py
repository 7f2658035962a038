"""The MuJoCo Warp backend (``backend="warp"``) on the Warp CPU device.

These run wherever `mujoco_warp` is installed (the ``dev`` and ``gpu`` extras), without a
GPU: the Warp CPU device runs the same kernels as CUDA, slowly. Worlds are kept to 2-3 so
the module takes well under a minute once the kernels are compiled (the first run on a
machine compiles them into ~/.cache/warp; see the README for the cold figure).

Parity tolerances. Both backends start from bit-identical float32 states (same seed,
same initial-state sampling, same randomization draws) and get identical actions, so the
only differences are float32 (Warp) vs float64 (C) arithmetic and solver warm-starts.
Measured on this machine (2026-11-29, mujoco-warp 4.0.0, warp-lang 1.19.0, Warp CPU
device; the runs are deterministic: the same figures on every run), max |C - Warp| over
3 worlds (random actions); each tolerance is about 10x the measured figure:

| task             | horizon  | qpos   | qvel   | observations | reward | tolerance (qpos / qvel / obs / reward) |
|------------------|----------|--------|--------|--------------|--------|----------------------------------------|
| cartpole-balance | 50 steps | 3.0e-8 | 1.8e-7 | 1.8e-7       | 0      | 3e-7 / 2e-6 / 2e-6 / exact             |
| panda-reach      | 25 steps | 2.2e-4 | 6.8e-3 | 7.2e-7       | 1.8e-7 | 2e-3 / 7e-2 / 7e-6 / 2e-6              |
| panda-pick       | 25 steps | 2.2e-4 | 6.8e-3 | 6.8e-4       | 0      | 2e-3 / 7e-2 / 7e-3 / exact             |
| go1-walk         | 25 steps | 2.7e-6 | 1.2e-4 | 6.4e-6       | 1.2e-7 | 3e-5 / 1.2e-3 / 6e-5 / 1.2e-6          |

The observations right after the reset are bit-identical (measured 0): compared exactly.
Cart-pole's reward (1 per step alive) and panda-pick's (sparse -1/0) are compared exactly:
any difference there is a disagreement about the task's state, not rounding.

Panda's largest errors are a transient in the first control step after a reset (the
fingers and the cube settling into their contacts, solved in float32 vs float64) that
decays within ~5 steps. Go1 is contact-rich and, being a free-floating robot driven by
random actions, chaotic: the two engines agree to ~1e-5 for 200 control steps (4 s) and
then separate (7 cm of base position apart after 600 steps), so its horizon is kept at
25 steps, where a mismatch in any contact, friction or randomized parameter shows up as
errors orders of magnitude above the tolerance.

mujoco-warp is in the ``dev`` extra (what ``./dev setup`` installs and CI runs), so this
module imports it unconditionally: a missing or broken install is a failure, not a skip.
Everything here runs on the Warp CPU device; no test needs a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mujoco_warp  # noqa: F401  (the dev extra installs it: missing is an error, not a skip)

import roboreal
from roboreal.config import ConfigError
from roboreal.envs.randomization import MODEL_PARAMS
from roboreal.envs.sim.backend import RANDOMIZED_FIELDS
from roboreal.envs.sim.mujoco_backend import MujocoBatchSim
from roboreal.envs.sim.warp_backend import SimOverflowError, WarpBatchSim

WARP = {"backend": "warp", "device": "cpu"}

# task: (control steps, qpos atol, qvel atol, observation atol, reward atol; 0: exact); see the
# module docstring. Measured max |C - Warp| on this machine, 2026-11-29, in the comments.
PARITY = {
    "cartpole-balance": (50, 3e-7, 2e-6, 2e-6, 0.0),  # measured 3.0e-8 / 1.8e-7 / 1.8e-7 / 0
    "panda-reach": (25, 2e-3, 7e-2, 7e-6, 2e-6),  # measured 2.2e-4 / 6.8e-3 / 7.2e-7 / 1.8e-7
    "panda-pick": (25, 2e-3, 7e-2, 7e-3, 0.0),  # measured 2.2e-4 / 6.8e-3 / 6.8e-4 / 0 (sparse reward)
    "go1-walk": (25, 3e-5, 1.2e-3, 6e-5, 1.2e-6),  # measured 2.7e-6 / 1.2e-4 / 6.4e-6 / 1.2e-7
}


def _actions(env, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(env.num_envs, env.spec.action_size, generator=gen) * 2 - 1


@pytest.mark.parametrize("task", list(PARITY))
def test_trajectories_match_the_c_engine(task):
    horizon, qpos_tol, qvel_tol, obs_tol, rew_tol = PARITY[task]
    c_env = roboreal.make(task, num_envs=3, seed=0)
    w_env = roboreal.make(task, num_envs=3, seed=0, **WARP)
    obs_c, _ = c_env.reset()
    obs_w, _ = w_env.reset()
    for k in obs_c:  # bit-identical start states (measured 0 on this machine, 2026-11-29)
        assert torch.equal(obs_w[k], obs_c[k]), k
    # the same randomization draws on both backends (go1 randomizes friction, mass, motors by default)
    for k, v in c_env.randomizer.values.items():
        assert torch.equal(v, w_env.randomizer.values[k]), k
    gen = torch.Generator().manual_seed(1)
    worst = {"qpos": 0.0, "qvel": 0.0, "obs": 0.0, "reward": 0.0}
    for step in range(horizon):
        a = _actions(c_env, gen)
        obs_c, rew_c, term_c, trunc_c, _ = c_env.step(a)
        obs_w, rew_w, term_w, trunc_w, _ = w_env.step(a)
        assert torch.equal(term_c, term_w) and torch.equal(trunc_c, trunc_w), f"step {step}"
        worst["qpos"] = max(worst["qpos"], (c_env.qpos - w_env.qpos).abs().max().item())
        worst["qvel"] = max(worst["qvel"], (c_env.qvel - w_env.qvel).abs().max().item())
        worst["obs"] = max(worst["obs"], max((obs_c[k] - obs_w[k]).abs().max().item() for k in obs_c))
        worst["reward"] = max(worst["reward"], (rew_c - rew_w).abs().max().item())
    print(f"{task}: max |C - Warp| over {horizon} steps: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert worst["qpos"] <= qpos_tol and worst["qvel"] <= qvel_tol and worst["obs"] <= obs_tol, worst
    assert worst["reward"] <= rew_tol, worst


FULL_DR = {
    "enabled": True,
    "friction": {"range": [0.4, 1.2], "targets": ["floor"]},
    "mass_scale": {"range": [0.8, 1.2]},
    "added_mass": {"range": [-1.0, 1.0], "targets": ["trunk"]},
    "com_offset": {"range": [-0.03, 0.03], "targets": ["trunk"]},
    "kp_scale": {"range": [0.8, 1.2]},
    "kd_scale": {"range": [0.5, 1.5]},
    "motor_strength": {"range": [0.9, 1.1]},
    "joint_damping_scale": {"range": [0.5, 2.0]},
    "armature_scale": {"range": [0.5, 2.0]},
    "gravity_tilt": {"range": [0.0, 0.1]},
    "action_latency": {"range": [0, 1]},
}


def test_every_randomized_value_lands_in_its_own_world():
    """Every model parameter of the table, 4 worlds: the Warp per-world arrays hold what the
    C backend's per-world models hold (same seed, same draws), world by world."""
    c_env = roboreal.make("go1-walk", num_envs=4, seed=3, randomization=FULL_DR)
    w_env = roboreal.make("go1-walk", num_envs=4, seed=3, randomization=FULL_DR, **WARP)
    sim = w_env.sim
    assert set(sim.describe()["per_world_fields"]) == {f for k in MODEL_PARAMS for f in RANDOMIZED_FIELDS[k]}
    for name in sim.describe()["per_world_fields"]:
        warp_values = sim.model_field(name).double().numpy()
        assert warp_values.shape[0] == 4, name
        for i in range(4):
            c_model = c_env.sim.models[i]
            expected = c_model.opt.gravity if name == "gravity" else getattr(c_model, name)
            # float32 vs float64: measured max relative difference 1.4e-7, and 0 where the value is 0
            # (this machine, 2026-11-29)
            np.testing.assert_allclose(warp_values[i].reshape(expected.shape), expected, rtol=1.5e-6, atol=0,
                                       err_msg=f"{name}, world {i}")
        assert len({warp_values[i].tobytes() for i in range(4)}) == 4, f"{name}: worlds share values"
    # spot checks against what the randomizer reports for each world
    floor = w_env.model.geom("floor").id
    for i in range(4):
        got = w_env.randomizer.describe(i)
        # the same float32 value (measured difference 0, this machine, 2026-11-29)
        assert sim.model_field("geom_friction")[i, floor, 0].item() == got["friction"][0]
        tilt = np.arccos(-sim.model_field("gravity")[i, 2].item() / 9.81)
        # arccos of a float32 near 1 (tilts 0.03-0.06 rad): measured 1.4e-6 rad, this machine, 2026-11-29
        assert tilt == pytest.approx(got["gravity_tilt"][0], abs=1.5e-5)
        # the host model rebuilt for rendering carries the same per-world values (measured difference 0)
        assert sim.model_of(i).geom_friction[floor, 0] == got["friction"][0]
    # and the randomized worlds simulate like the C engine's randomized worlds, world by world
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        a = _actions(c_env, gen)
        c_env.step(a)
        w_env.step(a)
    assert (c_env.qpos - w_env.qpos).abs().max().item() < 2e-5  # measured 1.8e-6, this machine, 2026-11-29


def test_reset_mode_randomization_changes_only_the_reset_world():
    dr = {"enabled": True, "friction": {"range": [0.3, 1.5], "mode": "reset", "targets": ["floor"]}}
    env = roboreal.make("go1-walk", num_envs=3, seed=0, randomization=dr, **WARP)
    floor = env.model.geom("floor").id
    before = env.sim.model_field("geom_friction")[:, floor, 0].clone()
    env._reset_idx(torch.tensor([1]))
    after = env.sim.model_field("geom_friction")[:, floor, 0]
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] != before[1]
    assert after[1].item() == env.randomizer.describe(1)["friction"][0]  # the same float32 (measured difference 0)


def test_observations_are_the_warp_arrays_without_copies():
    env = roboreal.make("cartpole-balance", num_envs=2, seed=0, **WARP)
    env.reset()
    d = env.sim._d
    assert env.qpos.data_ptr() == d.qpos.ptr and env.qvel.data_ptr() == d.qvel.ptr
    assert env.sensordata.data_ptr() == d.sensordata.ptr
    before = env.qpos.clone()
    env.step(torch.ones(2, 1))
    assert env.qpos.data_ptr() == d.qpos.ptr  # the same memory, updated in place by the step
    assert not torch.equal(env.qpos, before)


def test_a_parameter_the_backend_cannot_randomize_is_refused(monkeypatch):
    # Today MuJoCo Warp gives every field behind the randomization table a world
    # dimension, so both backends support the same parameters...
    assert WarpBatchSim.randomizable == MujocoBatchSim.randomizable == frozenset(MODEL_PARAMS)
    # ...and a backend that declares less refuses the rest by name instead of ignoring it.
    monkeypatch.setattr(WarpBatchSim, "randomizable", frozenset(MODEL_PARAMS) - {"gravity_tilt"})
    with pytest.raises(ValueError, match=r"randomization\.gravity_tilt: the 'warp' backend cannot randomize"):
        roboreal.make("cartpole-balance", num_envs=2, **WARP,
                      randomization={"enabled": True, "gravity_tilt": {"range": [0, 0.1]}})


def test_contact_overflow_is_an_error_not_nans():
    # One contact slot per world (two in the pool) cannot hold a standing quadruped's four
    # feet: once the robot settles onto them the step raises, naming the setting to raise;
    # every observation returned before that was finite.
    env = roboreal.make("go1-walk", num_envs=2, seed=0, warp={"nconmax": 1}, **WARP)
    with pytest.raises(SimOverflowError, match=r"contacts .* raise warp\.nconmax"):
        for _ in range(100):
            obs, *_ = env.step(torch.zeros(2, 12))
            assert all(torch.isfinite(v).all() for v in obs.values())
    # with the model-derived size the same rollout runs through
    env = roboreal.make("go1-walk", num_envs=2, seed=0, **WARP)
    for _ in range(100):
        env.step(torch.zeros(2, 12))
    assert env.foot_contacts.all()


def test_constraint_overflow_is_an_error():
    # go1 always has 12 dry-friction rows (frictionloss) and limit rows: 8 rows cannot hold them.
    with pytest.raises(SimOverflowError, match=r"constraint rows .* raise warp\.njmax"):
        roboreal.make("go1-walk", num_envs=2, seed=0, warp={"njmax": 8}, **WARP)


def test_buffers_are_sized_from_the_model_and_num_envs():
    env = roboreal.make("go1-walk", num_envs=3, seed=0, **WARP)
    info = env.sim.describe()
    # feet (spheres, 1 contact each), trunk box (8) and thigh capsules (2 each) against the floor
    assert info["contact_bound"] == 4 * 1 + 8 + 4 * 2 == info["nconmax"]
    assert info["naconmax"] == 3 * info["nconmax"]
    # 12 dry-friction dofs + 12 limited joints + 3 rows per elliptic condim-3 contact
    assert info["njmax"] == 12 + 12 + 3 * info["nconmax"]


def test_graph_capture_status_is_reported():
    env = roboreal.make("cartpole-balance", num_envs=2, seed=0, **WARP)
    assert env.sim.describe()["graph_capture"].startswith("off: the Warp CPU device has no CUDA graphs")
    with pytest.raises(ValueError, match="graph_capture"):
        roboreal.make("cartpole-balance", num_envs=2, warp={"graph_capture": True}, **WARP)


def test_bad_backend_options_are_refused():
    with pytest.raises(ConfigError, match="warp: nconmax must be >= 1"):
        roboreal.make("cartpole-balance", num_envs=2, warp={"nconmax": 0}, **WARP)
    with pytest.raises(ConfigError, match=r"warp\.nconmx: unknown field"):
        roboreal.make("cartpole-balance", num_envs=2, warp={"nconmx": 8}, **WARP)
    with pytest.raises(ConfigError, match="backend"):
        roboreal.make("gym:Pendulum-v1", backend="warp")


def test_ppo_trains_on_the_warp_backend_and_resumes(tmp_path):
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import resume, train

    cfg = resolve_config("cartpole-balance", "ppo", ["backend=warp", "num_steps=16", "runner.save_interval=1"],
                         num_envs=4, total_steps=4 * 16 * 2, seed=0)
    assert cfg.backend == "warp"
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["global_step"] == 128
    # the checkpoint carries the Warp worlds' state; resuming continues on the same backend
    resumed = resume(tmp_path / "run", total_steps=4 * 16 * 3, progress=False)
    assert resumed["global_step"] == 192
    with pytest.raises(ConfigError, match="backend"):
        resolve_config("cartpole-balance", "ppo", ["backend=physx"])
