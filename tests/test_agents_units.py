"""Unit tests of the agents' building blocks, on hand-built examples with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from roboreal.agents.buffers import ReplayBuffer, compute_gae
from roboreal.agents.her import HerReplayBuffer
from roboreal.agents.networks import TanhGaussianActor, tanh_log_prob_correction
from roboreal.agents.normalizer import RunningNormalizer
from roboreal.agents.ppo import PPO, PPOConfig
from roboreal.agents.sac import SAC, SACConfig
from roboreal.agents.toy import CounterEnv
from roboreal.config import ConfigError

# ---------------------------------------------------------------------------------------------
# GAE and PPO's time-out bootstrapping


def test_gae_hand_computed():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.6], [0.7]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends at t=1
    last = torch.tensor([0.8])
    adv, ret = compute_gae(rewards, values, dones, last, gamma, lam)
    # t=2: delta = 1 + 0.9*0.8 - 0.7 = 1.02
    # t=1: episode end, no bootstrap: delta = 1 - 0.6 = 0.4
    # t=0: delta = 1 + 0.9*0.6 - 0.5 = 1.04; A = 1.04 + 0.9*0.8*0.4 = 1.328
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.328, 0.4, 1.02]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([1.828, 1.0, 1.72]))


class FixedCritic(nn.Module):
    """V(obs) = 10 + obs[0]: makes V(final observation) = 13 differ from V(reset observation) = 10."""

    def forward(self, x):
        return 10.0 + x[..., 0]


def _ppo_on_counter(terminate_at):
    env = CounterEnv(num_envs=2, episode_steps=3, terminate_at=terminate_at)
    cfg = PPOConfig(num_steps=4, num_minibatches=1, normalize_obs=False, gamma=0.9, gae_lambda=0.8)
    ppo = PPO(env, cfg)
    ppo.critic = FixedCritic()
    ppo.collect()
    return ppo.storage


def test_ppo_bootstraps_time_outs_from_the_true_final_observation():
    s = _ppo_on_counter(terminate_at=None)
    gamma, lam = 0.9, 0.8
    # observations 0, 1, 2, [3 = final, time-out -> reset to 0], 1
    torch.testing.assert_close(s.obs["actor"][:, 0, 0], torch.tensor([0.0, 1.0, 2.0, 0.0]))
    torch.testing.assert_close(s.values[:, 0], torch.tensor([10.0, 11.0, 12.0, 10.0]))
    torch.testing.assert_close(s.dones[:, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    # the truncated step's reward carries gamma * V(final_obs = 3) = 0.9 * 13 (not V(reset obs = 0) = 10)
    torch.testing.assert_close(s.rewards[:, 0], torch.tensor([1.0, 1.0, 1.0 + gamma * 13.0, 1.0]))
    expected_adv, expected_ret = compute_gae(s.rewards, s.values, s.dones, torch.tensor([11.0, 11.0]), gamma, lam)
    torch.testing.assert_close(s.advantages, expected_adv)
    # by hand for t=2: delta = 1 + 0.9*13 - 12 = 0.7 (no bootstrap from the next, reset observation)
    assert s.advantages[2, 0].item() == pytest.approx(0.7, abs=1e-5)
    # and for t=1: delta = 1 + 0.9*12 - 11 = 0.8; A = 0.8 + 0.9*0.8*0.7
    assert s.advantages[1, 0].item() == pytest.approx(0.8 + 0.72 * 0.7, abs=1e-5)


def test_ppo_does_not_bootstrap_terminations():
    s = _ppo_on_counter(terminate_at=3)
    torch.testing.assert_close(s.rewards[:, 0], torch.tensor([1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(s.dones[:, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert s.advantages[2, 0].item() == pytest.approx(1.0 - 12.0, abs=1e-5)


def test_sac_stores_true_next_observation_and_bootstraps_through_time_outs_only():
    for terminate_at, expected_discount in ((None, 0.9), (3, 0.0)):
        env = CounterEnv(num_envs=2, episode_steps=3, terminate_at=terminate_at)
        sac = SAC(env, SACConfig(gamma=0.9, learning_starts=10_000, steps_per_iteration=4, buffer_size=64,
                                 hidden=[8, 8]))
        sac.iteration()
        buf = sac.buffer
        assert buf.obs["policy"][:4, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.0]
        assert buf.next_obs["policy"][:4, 0, 0].tolist() == [1.0, 2.0, 3.0, 1.0]  # 3: the final obs, not 0
        batch = buf.sample(256, 1, 0.9)
        at_end = batch["obs"]["policy"][:, 0] == 2.0
        assert at_end.any()
        torch.testing.assert_close(batch["discounts"][at_end], torch.full((int(at_end.sum()),), expected_discount))
        torch.testing.assert_close(batch["discounts"][~at_end], torch.full((int((~at_end).sum()),), 0.9))


# ---------------------------------------------------------------------------------------------
# tanh-squashed Gaussian log-probability


def test_tanh_log_prob_matches_a_numerical_density():
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, [16, 16])
    obs = torch.randn(64, 3)
    a, log_prob = actor.sample(obs)
    mean, log_std = actor.mean_log_std(obs)
    std = log_std.exp()
    # Numerical density of a = tanh(u): P(a - h < A < a + h) / 2h per dimension, from the Gaussian CDF.
    a64 = a.double().clamp(-1 + 1e-6, 1 - 1e-6)
    h = 1e-5 * (1 - a64.abs())
    normal = torch.distributions.Normal(mean.double(), std.double())
    prob = (normal.cdf(torch.atanh(a64 + h)) - normal.cdf(torch.atanh(a64 - h))) / (2 * h)
    numerical = prob.log().sum(-1)
    torch.testing.assert_close(log_prob.double(), numerical, atol=2e-3, rtol=1e-4)
    # the naive correction log(1 - tanh(u)^2) agrees where it is finite, and the stable form stays finite
    u = torch.linspace(-5, 5, 11)[:, None]
    torch.testing.assert_close(tanh_log_prob_correction(u), torch.log(1 - torch.tanh(u) ** 2).sum(-1), atol=1e-4,
                               rtol=1e-4)
    big = torch.tensor([[30.0]])
    assert torch.isfinite(tanh_log_prob_correction(big)).all()
    assert tanh_log_prob_correction(big).item() == pytest.approx(2 * (math.log(2) - 30.0), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# n-step returns from the replay buffer


def _reference_n_step(rewards, terminated, dones, next_obs, t, n, gamma):
    ret, disc = 0.0, 1.0
    for k in range(n):
        ret += disc * rewards[t + k]
        disc *= gamma
        end = t + k
        if dones[t + k]:
            break
    return ret, disc * (0.0 if terminated[end] else 1.0), next_obs[end]


@pytest.mark.parametrize("capacity", [100, 8])  # 8 rows < 12 steps: the ring wraps around
def test_n_step_returns(capacity):
    T, n, gamma = 12, 3, 0.5
    rewards = [float(t + 1) for t in range(T)]
    terminated = [t == 3 for t in range(T)]
    truncated = [t in (6, 10) for t in range(T)]
    dones = [a or b for a, b in zip(terminated, truncated)]
    next_obs = [100.0 + t for t in range(T)]  # at episode ends: the true final observation
    buf = ReplayBuffer(capacity, 1, {"policy": 1}, (), "cpu", action_dtype=torch.long)
    for t in range(T):
        buf.add({"policy": torch.tensor([[float(t)]])}, torch.tensor([t]), torch.tensor([rewards[t]]),
                {"policy": torch.tensor([[next_obs[t]]])}, torch.tensor([terminated[t]]), torch.tensor([truncated[t]]))
    torch.manual_seed(0)
    batch = buf.sample(512, n, gamma)
    seen = set()
    for i in range(512):
        t = int(batch["obs"]["policy"][i, 0])
        seen.add(t)
        ret, disc, nxt = _reference_n_step(rewards, terminated, dones, next_obs, t, n, gamma)
        assert batch["actions"][i].item() == t
        assert batch["rewards"][i].item() == pytest.approx(ret)
        assert batch["discounts"][i].item() == pytest.approx(disc)
        assert batch["next_obs"]["policy"][i, 0].item() == next_obs[int(nxt - 100)]
    oldest = max(0, T - min(capacity, T))
    assert seen == set(range(oldest, T - n + 1))  # only fully written windows are sampled
    if capacity == 100:  # a few by hand
        # t=2: 3 + 0.5*4, terminated at t=3 -> no bootstrap
        # t=4: 5 + 0.5*6 + 0.25*7 (time-out at t=6 is still bootstrapped with gamma^3 from next_obs[6])
        # t=8: 9 + 0.5*10 + 0.25*11, bootstrap gamma^3 from next_obs[10] (time-out)
        assert _reference_n_step(rewards, terminated, dones, next_obs, 2, n, gamma) == (5.0, 0.0, 103.0)
        assert _reference_n_step(rewards, terminated, dones, next_obs, 4, n, gamma) == (9.75, 0.125, 106.0)
        assert _reference_n_step(rewards, terminated, dones, next_obs, 8, n, gamma) == (16.75, 0.125, 110.0)


# ---------------------------------------------------------------------------------------------
# Hindsight relabeling


def _goal_reward(achieved, desired, info=None):
    return -(achieved != desired).any(-1).float()


def _her_buffer(strategy, capacity=1000, k=4):
    """2 envs; achieved goal of the next state of the transition at absolute step t in env e = (e, t).
    Env 0's episodes end at t = 4, 9 (then one running); env 1's at t = 2, 5, 11 (then running)."""
    N = 2
    buf = HerReplayBuffer(capacity, N, {"observation": 1, "achieved_goal": 2, "desired_goal": 2}, (1,), "cpu",
                          _goal_reward, strategy=strategy, k=k)
    ends = {0: {4, 9}, 1: {2, 5, 11}}
    for t in range(14):
        ag_next = torch.tensor([[0.0, t], [1.0, t]])
        obs = {"observation": torch.zeros(N, 1), "achieved_goal": ag_next - torch.tensor([0.0, 0.5]),
               "desired_goal": torch.full((N, 2), -7.0)}
        nxt = {"observation": torch.zeros(N, 1), "achieved_goal": ag_next, "desired_goal": torch.full((N, 2), -7.0)}
        truncated = torch.tensor([t in ends[0], t in ends[1]])
        buf.add(obs, torch.zeros(N, 1), torch.full((N,), -1.0), nxt, torch.zeros(N, dtype=torch.bool), truncated)
    return buf, ends


def _episode_bounds(ends_e, t, latest):
    start = max([e + 1 for e in ends_e if e < t], default=0)
    end = min([e for e in ends_e if e >= t], default=latest)
    return start, end


@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
def test_her_relabeling(strategy):
    torch.manual_seed(0)
    buf, ends = _her_buffer(strategy)
    batch = buf.sample(4000)
    relabeled = batch["relabeled"]
    assert relabeled.float().mean().item() == pytest.approx(4 / 5, abs=0.03)  # k=4 -> k/(k+1)
    env, t = batch["env"], batch["absolute"]
    goals = batch["obs"]["desired_goal"]
    assert torch.equal(goals, batch["next_obs"]["desired_goal"])
    for i in range(len(t)):
        e, ti = int(env[i]), int(t[i])
        if not relabeled[i]:
            assert goals[i].tolist() == [-7.0, -7.0] and batch["rewards"][i].item() == -1.0
            continue
        g_env, j = goals[i].tolist()
        assert g_env == e  # a goal from the same env's column ...
        start, end = _episode_bounds(ends[e], ti, latest=13)
        if strategy == "future":  # ... of the same episode, at or after this transition
            assert ti <= j <= end
        elif strategy == "final":
            assert j == end
        else:
            assert start <= j <= end
        # reward recomputed with compute_reward(next achieved goal, new goal): 0 iff the goal is this step's
        assert batch["rewards"][i].item() == (0.0 if j == ti else -1.0)
    if strategy == "future":
        relabeled_t = t[relabeled]
        hit = goals[relabeled][:, 1] == relabeled_t.float()
        assert 0 < hit.float().mean() < 1  # some relabeled transitions reach their goal, most do not


def test_her_relabeling_after_the_ring_wraps():
    torch.manual_seed(1)
    buf, ends = _her_buffer("episode", capacity=2 * 6)  # 6 rows: steps 8..13 remain
    batch = buf.sample(2000)
    t = batch["absolute"]
    assert int(t.min()) >= 8
    j = batch["obs"]["desired_goal"][batch["relabeled"]][:, 1]
    assert int(j.min()) >= 8  # never a goal from an overwritten transition


# ---------------------------------------------------------------------------------------------
# Normalizer, configs


def test_running_normalizer_matches_batch_statistics():
    torch.manual_seed(0)
    data = torch.randn(1000, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.0])
    norm = RunningNormalizer(3, clip=100.0)
    for chunk in data.split(37):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean.float(), data.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.var.float(), data.var(0, unbiased=False), atol=1e-4, rtol=1e-4)
    assert norm.count.item() == 1000
    y = norm(data)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    assert y.dtype == torch.float32
    assert RunningNormalizer(3, clip=2.0)(torch.full((1, 3), 1e6)).max().item() == 2.0


def test_misspelled_overrides_are_errors_naming_the_key():
    from roboreal.agents.run_config import resolve_config

    with pytest.raises(ConfigError, match="lerning_rate: unknown field"):
        resolve_config("cartpole-balance", "ppo", ["lerning_rate=0.1"])
    with pytest.raises(ConfigError, match="env.max_forse: unknown field"):
        resolve_config("cartpole-balance", "ppo", ["env.max_forse=3"])
    with pytest.raises(ConfigError, match="runner.save_intervl: unknown field"):
        resolve_config("cartpole-balance", "ppo", ["runner.save_intervl=3"])
    with pytest.raises(ConfigError, match="her.strategi: unknown field"):
        resolve_config("panda-reach-sparse", "sac", ["her.strategi=final"])
    with pytest.raises(ConfigError, match="learning_rate: expected a number"):
        resolve_config("cartpole-balance", "ppo", ["learning_rate=fast"])
    with pytest.raises(ConfigError, match="lr_schedule: must be one of"):
        resolve_config("cartpole-balance", "ppo", ["lr_schedule=cosine"])
    with pytest.raises(ConfigError, match="algo"):
        resolve_config("cartpole-balance", "a2c")
    cfg = resolve_config("cartpole-balance", "ppo", ["learning_rate=0.0003", "env.max_force=8.0",
                                                     "runner.save_interval=3", "seed=7"])
    assert cfg.algorithm["learning_rate"] == 0.0003 and cfg.env == {"max_force": 8.0}
    assert cfg.runner.save_interval == 3 and cfg.seed == 7
    sac = resolve_config("panda-reach-sparse", "sac", ["her.strategy=final", "her.k=2"])
    assert sac.algorithm["her"] == {"enabled": True, "strategy": "final", "k": 2}


def test_algorithm_refuses_the_wrong_action_type():
    from roboreal.agents.dqn import DQN, DQNConfig

    with pytest.raises(ConfigError, match="dqn needs discrete actions"):
        DQN(CounterEnv(num_envs=1), DQNConfig())


def test_exported_policy_equals_each_algorithms_deterministic_action():
    from roboreal.agents.dqn import DQN, DQNConfig
    from roboreal.agents.policy import build_policy
    from roboreal.agents.toy import PointGoalEnv
    from roboreal.envs import make

    torch.manual_seed(0)
    cases = [
        (PPO(make("cartpole-balance", num_envs=4), PPOConfig(num_steps=8, num_minibatches=2)), "continuous"),
        (SAC(PointGoalEnv(num_envs=4), SACConfig(hidden=[16, 16], normalize_obs=True, learning_starts=8,
                                                 steps_per_iteration=4, batch_size=8)), "continuous"),
        (DQN(make("cartpole-balance-discrete", num_envs=4), DQNConfig(hidden=[16, 16], learning_starts=8,
                                                                     steps_per_iteration=4, batch_size=8)), "discrete"),
    ]
    for algo, kind in cases:
        algo.iteration()  # normalizer statistics and weights move away from their initial values
        module = build_policy(algo.policy_state())
        obs = {k: torch.randn(32, v) * 2 for k, v in algo.env.spec.observation_sizes.items()}
        if algo.env.spec.goal_conditioned:
            obs["policy"] = torch.cat([obs["observation"], obs["desired_goal"]], -1)
        out = module(obs["policy"])
        expected = algo.act_deterministic(obs)
        if kind == "discrete":
            assert out.dtype == torch.long and torch.equal(out, expected)
        else:
            torch.testing.assert_close(out, expected)
            assert out.abs().max() <= 1.0


def test_exponent_numbers_in_overrides():
    from roboreal.agents.run_config import resolve_config

    cfg = resolve_config("cartpole-balance", "ppo", ["learning_rate=1e-3", "desired_kl=2E-2", "max_lr=-1.5e+1"])
    assert cfg.algorithm["learning_rate"] == 1e-3 and cfg.algorithm["desired_kl"] == 0.02
    assert cfg.algorithm["max_lr"] == -15.0


def test_learning_rate_schedules():
    from roboreal.envs import make

    env = make("cartpole-balance", num_envs=4)
    per_iter = 4 * 8
    ppo = PPO(env, PPOConfig(num_steps=8, num_minibatches=2, lr_schedule="linear", learning_rate=0.01),
              total_steps=4 * per_iter)
    seen = []
    for _ in range(4):
        ppo.iteration()
        seen.append(ppo.optimizer.param_groups[0]["lr"])
    # annealed from the step count at the start of each update: 1 - 1/4, 1 - 2/4, ...
    assert seen == pytest.approx([0.0075, 0.005, 0.0025, 0.0])
    fixed = PPO(env, PPOConfig(num_steps=8, num_minibatches=2, lr_schedule="fixed", learning_rate=0.01))
    fixed.iteration()
    assert fixed.optimizer.param_groups[0]["lr"] == 0.01
    # adaptive: a tiny desired KL pushes the rate down, a huge one up (bounded by min_lr / max_lr)
    down = PPO(env, PPOConfig(num_steps=8, num_minibatches=2, desired_kl=1e-9, learning_rate=0.001, min_lr=1e-4))
    up = PPO(env, PPOConfig(num_steps=8, num_minibatches=2, desired_kl=10.0, learning_rate=0.001, max_lr=0.003))
    down.iteration()
    up.iteration()
    assert down.learning_rate == pytest.approx(1e-4) and up.learning_rate == pytest.approx(0.003)


def test_env_state_round_trip_through_the_custom_hook():
    from roboreal.agents.env_state import env_state_dict, load_env_state
    from roboreal.agents.toy import PointGoalEnv

    a, b = PointGoalEnv(num_envs=3, seed=1), PointGoalEnv(num_envs=3, seed=2)
    actions = torch.rand(30, 3, 2) * 2 - 1
    for t in range(12):
        a.step(actions[t])
    load_env_state(b, env_state_dict(a))
    for t in range(12, 30):
        oa, ob = a.step(actions[t])[0], b.step(actions[t])[0]
        assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_env_state_round_trip_keeps_the_observation_history():
    """Exact resume of a MuJoCo task env whose policy sees a history: the stacked values are
    state too (a resumed run would otherwise see a history refilled from one value)."""
    from roboreal.agents.env_state import env_state_dict, load_env_state
    from roboreal.envs import make

    kwargs = dict(num_envs=3, observation_history={"joint_vel": 4, "base_ang_vel": 2})
    a, b = make("go1-walk", seed=1, **kwargs), make("go1-walk", seed=2, **kwargs)
    a.reset(), b.reset()
    actions = torch.rand(20, 3, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for t in range(8):
        a.step(actions[t])
    load_env_state(b, env_state_dict(a))
    for t in range(8, 20):
        oa, ob = a.step(actions[t])[0], b.step(actions[t])[0]
        assert all(torch.equal(oa[k], ob[k]) for k in oa), t
    a.close(), b.close()


def test_ppo_privileged_teacher_reads_the_critic_group():
    """actor_group="critic": the actor (and the exported policy) read the privileged group,
    which the bundle check refuses on a real robot; an unknown group names the field."""
    from roboreal.agents.policy import build_policy
    from roboreal.envs import make

    env = make("go1-walk", num_envs=2)
    sizes = env.spec.observation_sizes
    assert sizes["critic"] != sizes["policy"]
    teacher = PPO(env, PPOConfig(num_steps=4, num_minibatches=1, actor_group="critic", actor_hidden=[16],
                                 critic_hidden=[16]))
    teacher.iteration()
    state = teacher.policy_state()
    assert state["obs_group"] == "critic" and state["obs_size"] == sizes["critic"]
    obs = {k: torch.randn(3, v) for k, v in sizes.items()}
    torch.testing.assert_close(build_policy(state)(obs["critic"]), teacher.act_deterministic(obs))
    with pytest.raises(ConfigError, match="actor_group.*no observation group 'privileged'"):
        PPO(env, PPOConfig(actor_group="privileged"))
    env.close()


class _ConstantQ(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x, a):
        return torch.full(x.shape[:1], self.value)


def test_sac_target_takes_the_smaller_of_its_twin_target_critics(monkeypatch):
    """Clipped double Q (Fujimoto et al. 2018): the Bellman target uses min(Q1', Q2'), the
    guard against over-estimation. With Q1' = 1 and Q2' = 5 at every input, alpha = 0 and
    gamma = 0.5, every target is r + 0.5 * 1 (with 5 instead, the critics would move to r + 2.5)."""
    from roboreal.agents.sac import SAC, SACConfig
    from roboreal.agents.toy import CounterEnv

    torch.manual_seed(0)
    cfg = SACConfig(hidden=[8], batch_size=16, learning_starts=10_000, steps_per_iteration=8, gamma=0.5,
                    autotune=False, alpha=1e-8, critic_lr=0.05)
    algo = SAC(CounterEnv(num_envs=2, episode_steps=100), cfg)
    algo.iteration()  # fills the buffer (before learning_starts: no updates); every reward is 1, no termination
    algo.q1_target, algo.q2_target = _ConstantQ(1.0), _ConstantQ(5.0)
    monkeypatch.setattr("roboreal.agents.sac.polyak_update", lambda target, online, tau: None)  # targets stay put
    for _ in range(300):
        algo.update()
    x = algo.normalizer(algo.policy_input(algo.buffer.sample(64, 1, cfg.gamma)["obs"]))
    a = torch.zeros(64, algo.env.spec.action_size)
    with torch.no_grad():
        q1, q2 = algo.q1(x, a), algo.q2(x, a)
    # target = 1 + 0.5 * min(1, 5) = 1.5 (max would give 3.5)
    assert torch.allclose(q1, torch.full_like(q1, 1.5), atol=0.1), q1
    assert torch.allclose(q2, torch.full_like(q2, 1.5), atol=0.1), q2
