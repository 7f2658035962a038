"""Learning tests: each agent learns its task within a bounded budget (fixed seeds, 1 CPU thread).

The budgets are the per-task defaults in ``agents/configs/*.yaml``; each run is scored by
rolling out its exported deterministic policy (``load_policy``) on fresh envs with a
different seed than training.
"""

from __future__ import annotations

import pytest
import torch

from roboreal.agents.policy import build_policy, evaluate, load_policy
from roboreal.agents.runner import resolve_config, train
from roboreal.envs import make, task_names

pytestmark = pytest.mark.slow


def _train_and_evaluate(tmp_path, task, algo, episodes=32, overrides=(), seed=0):
    cfg = resolve_config(task, algo, list(overrides), seed=seed)
    result = train(cfg, tmp_path / "run", progress=False)
    module, info = load_policy(tmp_path / "run", "best")
    env = make(task, num_envs=episodes, seed=10_000 + seed, **cfg.env)
    scores = evaluate(module, env, obs_group=info["obs_group"])
    env.close()
    print(f"{task}/{algo}: {result['global_step']} steps in {result['wall_time_s']:.1f} s; train {result}; "
          f"deterministic eval {scores['mean_return']:.1f}, success {scores['success_rate']}")
    return scores


def test_ppo_balances_the_cartpole(tmp_path):
    scores = _train_and_evaluate(tmp_path, "cartpole-balance", "ppo")
    assert scores["mean_return"] > 450  # of 500


def test_dqn_balances_the_discrete_cartpole(tmp_path):
    scores = _train_and_evaluate(tmp_path, "cartpole-balance-discrete", "dqn")
    assert scores["mean_return"] > 400  # of 500


def test_sac_her_learns_a_sparse_goal_task_and_her_is_what_makes_it_work():
    """Toy 2-D point reaching with a -1/0 reward: HER solves it in a few thousand steps; plain SAC does not."""
    from roboreal.agents.sac import HerConfig, SAC, SACConfig
    from roboreal.agents.toy import PointGoalEnv

    def run(her: bool) -> float:
        torch.manual_seed(0)
        cfg = SACConfig(hidden=[64, 64], batch_size=128, learning_starts=1000, steps_per_iteration=20,
                        utd_ratio=0.25, gamma=0.95, her=HerConfig(enabled=her, strategy="future", k=4))
        algo = SAC(PointGoalEnv(num_envs=8, seed=0), cfg)
        while algo.global_step < 6400:
            algo.iteration()
        return evaluate(build_policy(algo.policy_state()), PointGoalEnv(num_envs=100, seed=99))["success_rate"]

    with_her, without = run(True), run(False)
    print(f"point-goal success: SAC+HER {with_her:.2f}, SAC {without:.2f}")
    assert with_her >= 0.9
    assert without < 0.5


requires_panda = pytest.mark.skipif("panda-reach" not in task_names(), reason="panda tasks are not registered")


@requires_panda
def test_ppo_reaches_with_the_panda(tmp_path):
    scores = _train_and_evaluate(tmp_path, "panda-reach", "ppo", episodes=64)
    assert scores["success_rate"] >= 0.9


@requires_panda
def test_sac_her_reaches_with_the_panda_from_sparse_rewards(tmp_path):
    scores = _train_and_evaluate(tmp_path, "panda-reach-sparse", "sac", episodes=64)
    assert scores["success_rate"] >= 0.9
