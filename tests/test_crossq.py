"""CrossQ: config validation, the BatchRenorm layer, the joint critic pass, learning, exact
resume and export (fixed seeds, 1 CPU thread)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from roboreal.agents.crossq import CrossQ, CrossQConfig
from roboreal.agents.networks import BatchRenorm
from roboreal.agents.policy import build_policy, evaluate, load_policy
from roboreal.agents.run_config import resolve_config
from roboreal.agents.runner import train
from roboreal.agents.toy import CounterEnv
from checkpoint_state import load_ckpt
from roboreal.config import ConfigError

# ---------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("field, value", [
    ("policy_delay", 0), ("utd_ratio", 0.0), ("batch_size", 1), ("brn_momentum", 1.0), ("brn_r_max", 0.5),
    ("brn_d_max", -1.0), ("brn_warmup_steps", -1), ("adam_beta1", 1.0), ("critic_hidden", []),
    ("actor_hidden", [64, 0]), ("activation", "swish"), ("gamma", 1.5),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field}: ") as err:
        CrossQConfig(**{field: value})
    assert err.value.field == field


def test_overrides_are_validated_and_misspellings_named():
    with pytest.raises(ConfigError, match="brn_momentum"):
        resolve_config("gym:Pendulum-v1", "crossq", ["brn_momentum=1.5"])
    with pytest.raises(ConfigError, match="critc_hidden: unknown field"):
        resolve_config("gym:Pendulum-v1", "crossq", ["critc_hidden=[64,64]"])
    with pytest.raises(ConfigError, match="brn_warmup"):
        resolve_config("gym:Pendulum-v1", "crossq", ["brn_warmup=smooth"])
    cfg = resolve_config("go1-walk", "crossq", ["critic_hidden=[2048,2048]", "utd_ratio=0.1"])
    assert cfg.algorithm["critic_hidden"] == [2048, 2048] and cfg.algorithm["adam_beta1"] == 0.5
    assert cfg.algorithm["normalize_obs"] and cfg.algorithm["policy_delay"] == 3


def test_crossq_refuses_discrete_actions():
    from roboreal.envs import make

    with pytest.raises(ConfigError, match="crossq needs continuous actions"):
        CrossQ(make("cartpole-balance-discrete", num_envs=1), CrossQConfig())


# ---------------------------------------------------------------------------------------------
# BatchRenorm, checked against hand-computed values


def _batch(seed: int = 0, n: int = 64, f: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, f, generator=g) * torch.tensor([2.0, 0.5, 1.0]) + torch.tensor([1.0, -3.0, 0.0])


def test_batch_renorm_is_batch_norm_during_warm_up_and_tracks_running_statistics():
    layer = BatchRenorm(3, momentum=0.9, eps=1e-3, warmup_steps=5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = _batch()
    mean, var = x.mean(0), x.var(0, unbiased=False)
    for step in range(1, 4):
        y = layer(x)
        # plain BatchNorm: batch statistics, no renormalization yet
        expected = torch.nn.functional.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=1e-3)
        torch.testing.assert_close(y, expected)
        # running <- 0.9 running + 0.1 batch, from mean 0 / var 1, with the biased batch variance
        torch.testing.assert_close(layer.running_mean, mean * (1 - 0.9 ** step))
        torch.testing.assert_close(layer.running_var, 0.9 ** step + var * (1 - 0.9 ** step))
        assert int(layer.steps) == step


def test_batch_renorm_clips_r_and_d_after_warm_up():
    layer = BatchRenorm(3, momentum=0.99, eps=1e-3, r_max=3.0, d_max=5.0, warmup_steps=0)
    # running statistics chosen so r and d are clipped on features 0 and 1 and free on feature 2
    running_mean = torch.tensor([-20.0, -3.1, 0.2])
    running_var = torch.tensor([0.01, 25.0, 1.2])
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    x = _batch(1)
    mean, std = x.mean(0), torch.sqrt(x.var(0, unbiased=False) + 1e-3)
    running_std = torch.sqrt(running_var + 1e-3)
    r_raw, d_raw = std / running_std, (mean - running_mean) / running_std
    assert r_raw[0] > 3.0 and d_raw[0] > 5.0 and r_raw[1] < 1 / 3.0 and 1 / 3 < r_raw[2] < 3 and abs(d_raw[2]) < 5
    r = torch.tensor([3.0, 1 / 3.0, float(r_raw[2])])
    d = torch.tensor([5.0, float(d_raw[1]), float(d_raw[2])])
    y = layer(x)
    torch.testing.assert_close(y, (x - mean) / std * r + d)
    # unclipped, the forward value is the normalization by the running statistics in force before the pass
    torch.testing.assert_close(y[:, 2], (x[:, 2] - running_mean[2]) / running_std[2])
    # the statistics move after r and d were computed
    torch.testing.assert_close(layer.running_mean, 0.99 * running_mean + 0.01 * mean)


def test_batch_renorm_gradient_flows_through_batch_statistics_only():
    """r and d are constants for the gradient: like BatchNorm, sum(y) does not depend on x
    (the batch mean is subtracted); if r and d carried gradient, y would be the running-stat
    normalization and d sum(y) / dx = 1 / sigma."""
    layer = BatchRenorm(3, warmup_steps=0)
    layer.running_mean.copy_(torch.tensor([0.5, -2.0, 0.1]))
    layer.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = _batch(2).requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad.abs().max() < 1e-4


def test_batch_renorm_eval_mode_uses_running_statistics_per_sample():
    layer = BatchRenorm(3, eps=1e-3, warmup_steps=0)
    for seed in range(3):
        layer(_batch(seed))
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = _batch(7)
    y = layer(x)
    expected = (x - layer.running_mean) / torch.sqrt(layer.running_var + 1e-3) * layer.weight + layer.bias
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(layer(x[:1]), y[:1])  # one observation at a time: no batch dependence
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k  # no statistics update in eval mode


def test_batch_renorm_warm_up_schedules():
    switch = BatchRenorm(2, warmup_steps=10, warmup="switch", r_max=3.0, d_max=5.0)
    ramp = BatchRenorm(2, warmup_steps=10, warmup="ramp", r_max=3.0, d_max=5.0)
    for layer, limits_at_5 in ((switch, (1.0, 0.0)), (ramp, (2.0, 2.5))):
        layer.steps.fill_(5)
        assert tuple(float(v) for v in layer.renorm_limits()) == limits_at_5
        layer.steps.fill_(10)
        assert tuple(float(v) for v in layer.renorm_limits()) == (3.0, 5.0)


# ---------------------------------------------------------------------------------------------
# the algorithm


def test_time_outs_bootstrap_from_the_true_next_observation():
    for terminate_at, expected_discount in ((None, 0.9), (3, 0.0)):
        env = CounterEnv(num_envs=2, episode_steps=3, terminate_at=terminate_at)
        algo = CrossQ(env, CrossQConfig(gamma=0.9, learning_starts=10_000, steps_per_iteration=4, buffer_size=64,
                                        actor_hidden=[8], critic_hidden=[8]))
        algo.iteration()
        assert algo.buffer.next_obs["policy"][:4, 0, 0].tolist() == [1.0, 2.0, 3.0, 1.0]  # 3: the final obs
        batch = algo.buffer.sample(256, 1, 0.9)
        at_end = batch["obs"]["policy"][:, 0] == 2.0
        torch.testing.assert_close(batch["discounts"][at_end], torch.full((int(at_end.sum()),), expected_discount))


def test_joint_critic_pass_update_to_data_ratio_and_policy_delay():
    torch.manual_seed(0)
    env = CounterEnv(num_envs=4, episode_steps=5)
    cfg = CrossQConfig(learning_starts=8, steps_per_iteration=5, utd_ratio=0.75, batch_size=16, buffer_size=400,
                       actor_hidden=[16], critic_hidden=[16], brn_momentum=0.9)
    algo = CrossQ(env, cfg)
    algo.iteration()
    # learning starts once 8 transitions are in (after the 2nd env step): 4 env steps x 4 envs
    # x 0.75 updates per transition
    assert algo.updates == 12
    algo.iteration()
    assert algo.updates == 27
    # delayed policy updates: the actor's optimizer stepped at updates 0, 3, 6, ... (9 of 27)
    actor_steps = {int(s["step"]) for s in algo.actor_optimizer.state_dict()["state"].values()}
    critic_steps = {int(s["step"]) for s in algo.critic_optimizer.state_dict()["state"].values()}
    assert actor_steps == {9} and critic_steps == {27}
    assert algo.critic_optimizer.param_groups[0]["betas"][0] == 0.5

    # one more update on a known batch: the critics' input BatchRenorm saw [(s, a); (s', a')]
    sample = algo.buffer.sample
    seen = {}

    def recording_sample(*args):
        seen["batch"] = sample(*args)
        return seen["batch"]

    algo.buffer.sample = recording_sample
    before = algo.q1.net[0].running_mean.clone()
    algo.update()
    batch = seen["batch"]
    both_halves = torch.cat([batch["obs"]["policy"], batch["next_obs"]["policy"]]).mean(0)
    torch.testing.assert_close(algo.q1.net[0].running_mean[:1], 0.9 * before[:1] + 0.1 * both_halves)
    # the actor (eval mode while acting and bootstrapping) updated its statistics only in policy updates
    assert int(algo.actor.trunk[0].steps) == 9 + 1 and int(algo.q1.net[0].steps) == 28


def test_crossq_learns_the_pendulum(tmp_path):
    """The per-task defaults of agents/configs/crossq.yaml (gym:Pendulum-v1: 10k steps, 8 envs,
    UTD 1, critics [128, 128]) reach a deterministic return of about -112 (seeds 0-2) in
    ~40 s on one CPU thread; random actions score about -1200."""
    from roboreal.envs import make

    cfg = resolve_config("gym:Pendulum-v1", "crossq", seed=0)
    start = time.perf_counter()
    result = train(cfg, tmp_path / "run", progress=False)
    module, info = load_policy(tmp_path / "run", "best")
    env = make("gym:Pendulum-v1", num_envs=16, seed=10_000)
    scores = evaluate(module, env, obs_group=info["obs_group"])
    env.close()
    print(f"gym:Pendulum-v1/crossq: {result['global_step']} steps in {time.perf_counter() - start:.1f} s; "
          f"deterministic eval {scores['mean_return']:.1f}")
    assert scores["mean_return"] > -200


# ---------------------------------------------------------------------------------------------
# checkpoints and export


# go1-walk: asymmetric critic (`critic` group), observation normalization, randomized env;
# a short BatchRenorm warm-up so the renormalizing branch runs within the run.
GO1_TINY = ["steps_per_iteration=5", "learning_starts=40", "utd_ratio=0.5", "batch_size=32", "buffer_size=1000",
            "actor_hidden=[32,32]", "critic_hidden=[32,32]", "brn_warmup_steps=10", "runner.save_interval=2"]


@pytest.mark.parametrize("task", ["cartpole-balance", "go1-walk"])
def test_checkpoint_holds_the_renorm_statistics_past_the_warm_up(tmp_path, task):
    """Exact resume is tested for every algorithm in test_agents_runner (its crossq cases); here:
    what a CrossQ checkpoint holds (on go1 the critics read the privileged group, the actor the policy group)."""
    cfg = resolve_config(task, "crossq", GO1_TINY, num_envs=4, seed=3, total_steps=4 * 5 * 6)
    train(cfg, tmp_path / "run", progress=False)
    state = load_ckpt(tmp_path / "run/checkpoints/last.pt")["algorithm"]
    assert state["updates"] > 0 and int(state["q1"]["net.0.steps"]) > 10  # past the warm-up
    if task == "go1-walk":
        assert state["q1"]["net.0.running_mean"].shape == (53 + 12,)
        assert state["actor"]["trunk.0.running_mean"].shape == (45,)
        assert "critic" in state["replay"]["obs"] and float(state["critic_norm"]["count"]) > 0


def test_exported_policy_equals_the_live_actor_in_eval_mode():
    torch.manual_seed(0)
    from roboreal.envs import make

    algo = CrossQ(make("go1-walk", num_envs=4, seed=1),
                  CrossQConfig(learning_starts=16, steps_per_iteration=8, utd_ratio=1.0, batch_size=16,
                               buffer_size=512, actor_hidden=[32, 32], critic_hidden=[32, 32], normalize_obs=True,
                               brn_warmup_steps=2))
    algo.iteration()
    assert int(algo.actor.trunk[0].steps) > 2  # the actor's BatchRenorm statistics moved
    module = build_policy(algo.policy_state())
    assert not module.training and not module.actor.trunk[0].running_mean.eq(0).all()
    obs = {"policy": torch.randn(64, 45) * 2, "critic": torch.randn(64, 53)}
    out = module(obs["policy"])
    torch.testing.assert_close(out, algo.act_deterministic(obs))
    torch.testing.assert_close(module(obs["policy"][:1]), out[:1])  # per-observation, as deployed
    assert out.abs().max() <= 1.0


def test_crossq_run_exports_to_a_bundle(tmp_path):
    from roboreal.policy_bundle import load_bundle
    from roboreal.sim2real.bundle import export_bundle

    cfg = resolve_config("go1-walk", "crossq", GO1_TINY, num_envs=4, seed=0, total_steps=4 * 5 * 4)
    train(cfg, tmp_path / "run", progress=False)
    module, info = load_policy(tmp_path / "run")
    assert info["algo"] == "crossq" and info["obs_group"] == "policy" and info["obs_size"] == 45
    bundle_dir = export_bundle(tmp_path / "run")
    obs = torch.randn(256, 45, generator=torch.Generator().manual_seed(1)) * 3.0
    expected = module(obs).numpy()
    for runtime in ("onnx", "torchscript"):
        bundle = load_bundle(bundle_dir, robot="go1", runtime=runtime)
        np.testing.assert_allclose(bundle.act(obs.numpy()), expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(bundle.act(obs[0].numpy()), expected[0], atol=1e-5)
    assert bundle.manifest["training"]["algo"] == "crossq"
