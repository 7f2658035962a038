"""Offline RL (IQL): the expectile loss, advantage weighting that BC cannot show, bootstrapping
through V(s'), rewards (computed from goals or refused with the file named), and the
`roboreal offline` run directory that play and export take.

Fixed seeds; one torch thread (tests/conftest.py).
"""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from roboreal.agents.bc import BCConfig, train_bc
from roboreal.agents.iql import IQLConfig, expectile_loss, train_iql
from roboreal.agents.offline_data import goal_reward_fn, load_offline_data
from roboreal.config import ConfigError
from roboreal.data import DatasetError, DatasetReader, DatasetWriter, load_transitions

# small networks, a faster learning rate than the paper's 3e-4: the toy problems converge in ~1-2 s
FAST = dict(hidden=[64, 64], batch_size=128, actor_lr=1e-3, critic_lr=1e-3, value_lr=1e-3, log_interval=500)


def _meta(obs_size: int, action_size: int = 1, task: str | None = None) -> dict:
    return {"task": task, "action_size": action_size, "obs_groups": {"policy": obs_size}}


# ----------------------------------------------------------------------------------------------
# The expectile loss

def test_expectile_loss_at_one_half_is_half_the_squared_error_and_asymmetric_above():
    u = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])
    torch.testing.assert_close(expectile_loss(u, 0.5), 0.5 * u.square())
    w = expectile_loss(u, 0.9) / u.square().clamp_min(1e-12)
    torch.testing.assert_close(w[u > 0], torch.full((2,), 0.9))  # under-estimates (target above) cost more
    torch.testing.assert_close(w[u < 0], torch.full((2,), 0.1))
    assert expectile_loss(torch.tensor([1.0]), 0.7) > expectile_loss(torch.tensor([-1.0]), 0.7)


def test_expectile_regression_converges_to_the_expectile():
    """Minimizing the loss over a scalar v gives the tau-expectile of the targets: for targets
    in {0, 1} with P(1) = p, v = tau p / (tau p + (1 - tau)(1 - p)) -- V's upper end of Q."""
    targets = torch.tensor([1.0] * 30 + [0.0] * 70)
    for tau in (0.5, 0.7, 0.9):
        v = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([v], max_iter=100)

        def closure():
            opt.zero_grad()
            loss = expectile_loss(targets - v, tau).mean()
            loss.backward()
            return loss

        opt.step(closure)
        p = 0.3
        assert float(v.detach()) == pytest.approx(tau * p / (tau * p + (1 - tau) * (1 - p)), abs=1e-4)


def test_config_errors_name_the_field():
    for bad, field in (({"expectile": 1.0}, "expectile"), ({"temperature": -1.0}, "temperature"),
                       ({"batch_size": 0}, "batch_size"), ({"polyak": 0.0}, "polyak"), ({"hidden": []}, "hidden"),
                       ({"online_steps": -1}, "online_steps"), ({"online_utd": 0.0}, "online_utd"),
                       ({"online_envs": 0}, "online_envs"), ({"online_noise": -0.1}, "online_noise"),
                       ({"online_actor_lr": 0.0}, "online_actor_lr")):
        with pytest.raises(ConfigError, match=field):
            IQLConfig(**bad)


# ----------------------------------------------------------------------------------------------
# Learning: what advantage weighting does that BC cannot

def _bandit(path, n: int = 300, seed: int = 0) -> None:
    """One-step episodes: state x ~ U(-1, 1); the data holds a = +0.8 and a = -0.8 equally often
    (plus noise) in every state; reward 1 when sign(a) == sign(x), else 0."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, _meta(1), fsync=False) as w:
        for _ in range(n):
            x = rng.uniform(-1, 1)
            a = rng.choice([-0.8, 0.8]) + rng.normal(0, 0.05)
            w.add_step({"policy": [x]}, [a], float(np.sign(a) == np.sign(x)), True, next_obs={"policy": [x]})
            w.end_episode()


def test_iql_picks_the_rewarded_action_where_bc_averages_the_two(tmp_path):
    path = tmp_path / "bandit.hdf5"
    _bandit(path)
    data = load_offline_data(path)
    assert len(data) == 300 and float(data.terminals.sum()) == 300  # every step ended its episode
    x = torch.linspace(-1, 1, 21)[:, None]
    away = x.abs().squeeze() >= 0.2  # the optimal action flips at 0: judge the states away from it

    agent, rows = train_iql(data, IQLConfig(steps=1500, temperature=3.0, policy="deterministic", **FAST), seed=0)
    iql = (agent.act(x).squeeze() * x.squeeze().sign())[away]
    assert (iql > 0.5).all(), iql  # measured 0.67-0.78: the high-reward side, near its 0.8
    with torch.no_grad():  # Q ranks the rewarded action above the other
        s = agent.normalizer(x)
        good, bad = 0.8 * x.sign(), -0.8 * x.sign()
        assert (agent.q1(s, good) > agent.q1(s, bad) + 0.5)[away].all()
    assert rows[-1]["weight/mean"] > 1.0  # exp(beta * A) puts more weight on some samples

    # the control: temperature 0 gives every sample weight 1 (BC on all actions): the average, near 0
    flat, _ = train_iql(data, IQLConfig(steps=1500, temperature=0.0, policy="deterministic", **FAST), seed=0)
    assert flat.act(x).abs().max() < 0.4  # measured <= 0.32

    # BC on the same data (the executed actions as labels) averages the two actions too
    train, _, _ = load_transitions(path, 0.0, 0, "executed")
    bc, _ = train_bc(train, None, BCConfig(hidden=[64, 64], labels="executed", val_fraction=0.0, max_epochs=15,
                                          updates_per_epoch=100, batch_size=128), seed=0)
    bc_act = bc.policy()(x)
    assert bc_act.abs().max() < 0.4  # measured <= 0.29
    print(f"mean a*sign(x) away from 0: IQL {float(iql.mean()):.2f}, BC "
          f"{float((bc_act.squeeze() * x.squeeze().sign())[away].mean()):.2f}")

    # the Gaussian actor (the paper's) learns the same choice
    gauss, _ = train_iql(data, IQLConfig(steps=1500, temperature=3.0, policy="gaussian", **FAST), seed=1)
    assert ((gauss.act(x).squeeze() * x.squeeze().sign())[away] > 0.5).all()


def test_iql_credits_a_first_action_through_v_of_the_next_state(tmp_path):
    """Two steps: the first action decides whether the second step pays 1; the first step pays 0.
    Only r + gamma V(s') can tell the first step's actions apart (its reward is 0 for both)."""
    path = tmp_path / "chain.hdf5"
    rng = np.random.default_rng(1)
    with DatasetWriter(path, _meta(2), fsync=False) as w:
        for _ in range(300):
            x = rng.uniform(-1, 1)
            a0 = rng.choice([-0.8, 0.8]) + rng.normal(0, 0.05)
            flag = 1.0 if np.sign(a0) == np.sign(x) else -1.0
            s0, s1 = [x, 0.0], [x, flag]
            w.add_step({"policy": s0}, [a0], 0.0, False, next_obs={"policy": s1})
            w.add_step({"policy": s1}, [rng.uniform(-1, 1)], float(flag > 0), True, next_obs={"policy": s1})
            w.end_episode()
    data = load_offline_data(path)
    agent, _ = train_iql(data, IQLConfig(steps=2000, temperature=3.0, policy="deterministic", gamma=0.9, **FAST),
                         seed=0)
    x = torch.linspace(-1, 1, 21)[:, None]
    away = x.abs().squeeze() >= 0.2
    first = torch.cat([x, torch.zeros_like(x)], dim=-1)
    picked = (agent.act(first).squeeze() * x.squeeze().sign())[away]
    assert (picked > 0.5).all(), picked
    with torch.no_grad():  # V(s1) ~ 1 after a good first action, ~ 0 after a bad one
        v_good = agent.value(agent.normalizer(torch.cat([x, torch.ones_like(x)], -1)))
        v_bad = agent.value(agent.normalizer(torch.cat([x, -torch.ones_like(x)], -1)))
    assert (v_good > 0.8).all() and (v_bad.abs() < 0.2).all()


# ----------------------------------------------------------------------------------------------
# Rewards: computed from the task's goals, or refused naming the file

def test_unknown_rewards_are_refused_naming_the_file_the_count_and_what_to_do(tmp_path, capsys):
    from roboreal.cli import main
    from roboreal.envs import make

    env = make("cartpole-balance", num_envs=1)
    k, a = env.spec.observation_sizes["policy"], env.spec.action_size
    env.close()
    path = tmp_path / "robot_session.hdf5"
    with DatasetWriter(path, {**_meta(k, a, "cartpole-balance"), "source": "robot"}, fsync=False) as w:
        for ep in range(2):
            for t in range(3):  # a robot has no reward function: NaN rewards
                w.add_step({"policy": np.zeros(k)}, np.zeros(a), done=t == 2, next_obs={"policy": np.zeros(k)})
            w.end_episode()
    with pytest.raises(DatasetError, match=r"robot_session\.hdf5: 6 of 6 steps \(in 2 of 2 episodes\) have unknown"):
        load_offline_data(path)
    assert main(["offline", str(path), "--task", "cartpole-balance", "--run-dir", str(tmp_path / "run"), "--steps",
                 "10", "--eval-episodes", "0", "--quiet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "robot_session.hdf5: 6 of 6 steps" in err and "roboreal bc" in err and "simulator state" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before anything was trained


def test_unknown_goal_task_rewards_are_computed_from_the_stored_goals(tmp_path):
    """panda-reach: NaN rewards (as a robot recording stores them) recomputed from
    (achieved_goal after the step, desired_goal) equal the rewards the simulator gave."""
    from roboreal.agents.dagger import collect
    from roboreal.envs import make

    sim = tmp_path / "sim.hdf5"
    collect("panda-reach", "scripted", 2, sim, num_envs=2, seed=4, with_states=False)
    robot = tmp_path / "as_robot.hdf5"
    shutil.copy(sim, robot)
    with h5py.File(robot, "a") as f:
        for name in f["data"]:
            f["data"][name]["rewards"][...] = np.nan
    env = make("panda-reach", num_envs=1)
    fn, why = goal_reward_fn(env)
    assert fn is not None and why == ""
    known = load_offline_data(sim)
    with pytest.raises(DatasetError, match="as_robot.hdf5: 100 of 100 steps"):
        load_offline_data(robot, rewards="dataset", reward_fn=fn)
    computed = load_offline_data(robot, reward_fn=fn)
    env.close()
    assert computed.files[str(robot)]["computed_rewards"] == 100 and computed.files[str(robot)]["unknown_rewards"] == 0
    assert float(known.rewards.abs().sum()) > 1.0  # dense reward: -distance, not all zero
    torch.testing.assert_close(computed.rewards, known.rewards, atol=1e-5, rtol=1e-5)
    # episodes end by the time limit: recorded as truncated, so their last step is bootstrapped
    with DatasetReader(sim) as r:
        assert all(r.episode_attrs(n)["terminated"] is False for n in r.names)
    assert float(known.terminals.sum()) == 0


# ----------------------------------------------------------------------------------------------
# The CLI: a run directory that play and export take

def test_offline_cli_writes_a_run_that_play_and_export_take(tmp_path, capsys):
    from roboreal.agents.experts import make_expert
    from roboreal.agents.policy import load_policy
    from roboreal.cli import main
    from roboreal.envs import make

    data = tmp_path / "demos.hdf5"
    assert main(["collect", "panda-reach", "--expert", "scripted", "--episodes", "4", "--out", str(data),
                 "--num-envs", "4", "--seed", "3"]) == 0
    run = tmp_path / "iql_run"
    assert main(["offline", str(data), "--task", "panda-reach", "--algo", "iql", "--run-dir", str(run), "--steps",
                 "200", "--eval-episodes", "2", "--quiet", "hidden=[32,32]", "eval_interval=100",
                 "log_interval=50", "batch_size=64"]) == 0
    out = capsys.readouterr().out
    assert "IQL on 200 transitions of 4 episodes" in out and "200 updates" in out
    for f in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "progress.csv", "metrics.json"):
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard scalars"
    rows = (run / "progress.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "eval/success_rate" in rows[0] and "loss/q" in rows[0]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"q1", "q2", "q1_target", "q2_target", "value", "actor"} <= set(last["iql"])
    module, info = load_policy(run, "last")
    assert info["task"] == "panda-reach" and info["algo"] == "iql" and info["step"] == 200
    assert info["obs_size"] == 20 and info["action_size"] == 7
    assert main(["play", str(run), "--episodes", "2"]) == 0
    assert main(["export", str(run)]) == 0
    env = make("panda-reach", num_envs=2, seed=0)
    obs, _ = env.reset()
    best, _ = load_policy(run)
    bundle_expert = make_expert(str(run / "bundle"), env)
    torch.testing.assert_close(bundle_expert.act(obs, env), best(obs["policy"]), atol=1e-5, rtol=1e-5)
    assert best(obs["policy"]).abs().max() <= 1.0
    env.close()
    # a misspelled override names itself; a second run into the same directory is refused
    assert main(["offline", str(data), "--run-dir", str(tmp_path / "x"), "expectle=0.8"]) == 2
    assert "expectle" in capsys.readouterr().err
    assert main(["offline", str(data), "--run-dir", str(run), "--steps", "1", "--eval-episodes", "0", "--quiet",
                 "--no-progress"]) == 2
    capsys.readouterr()
    # online fine-tuning in the same command: the offline phase's score beside the final one
    tuned = tmp_path / "iql_online"
    assert main(["offline", str(data), "--task", "panda-reach", "--run-dir", str(tuned), "--steps", "60",
                 "--eval-episodes", "2", "--quiet", "--no-progress", "hidden=[32,32]", "batch_size=64",
                 "online_steps=40", "online_envs=4", "log_interval=20"]) == 0
    out = capsys.readouterr().out
    assert "then 40 online transitions (success rate" in out and "100 updates" in out
    metrics = json.loads((tuned / "metrics.json").read_text())
    assert metrics["online_env_steps"] == 40 and metrics["offline_updates"] == 60 and metrics["updates"] == 100
    assert metrics["offline_success_rate"] is not None and metrics["success_rate"] is not None
    rows = list(csv.DictReader((tuned / "progress.csv").open()))
    assert [r["online/env_steps"] for r in rows if r["online/env_steps"]][-1] == "40"
    assert rows[-1]["step"] == "100" and rows[-1]["eval/success_rate"] != ""
    assert load_policy(tuned, "last")[1]["step"] == 100


# ----------------------------------------------------------------------------------------------
# Online fine-tuning: beyond the actions the dataset holds

def test_online_finetuning_moves_the_policy_beyond_the_dataset_actions(tmp_path):
    """`SignBanditEnv` pays ``a * sign(x)``; the dataset holds only actions on the wrong side
    (``a = -u sign(x)``, u ~ U(0, 1): rewards <= 0). Offline, IQL can do no better than the
    dataset's best action (near 0); the online phase samples around it, finds the positive side
    and follows it -- which neither offline training nor BC can."""
    from roboreal.agents.buffers import TransitionBuffer
    from roboreal.agents.iql import finetune_iql
    from roboreal.agents.toy import SignBanditEnv

    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "wrong_side.hdf5", _meta(1), fsync=False) as w:
        for _ in range(400):
            x, u = rng.uniform(-1, 1), rng.uniform(0, 1)
            a = -u * np.sign(x)
            w.add_step({"policy": [x]}, [a], float(a * np.sign(x)), True, next_obs={"policy": [x]})
            w.end_episode()
    data = load_offline_data(tmp_path / "wrong_side.hdf5")
    x = torch.linspace(-1, 1, 21)[:, None]
    away = x.abs().squeeze() >= 0.2

    def gain(agent) -> float:  # mean a * sign(x): the reward of the deterministic policy
        return float((agent.act(x).squeeze() * x.squeeze().sign())[away].mean())

    cfg = IQLConfig(steps=1500, temperature=3.0, online_steps=3000, online_envs=8, online_actor_lr=1e-3, **FAST)
    agent, _ = train_iql(data, cfg, seed=0)
    offline_gain = gain(agent)
    assert offline_gain <= 0.05, offline_gain  # no better than the dataset's best action (a ~ 0)

    evals = []
    rows = finetune_iql(agent, data, SignBanditEnv(num_envs=8, seed=1), cfg, seed=1,
                        evaluate=lambda ag, step: evals.append(step) or {"eval/gain": gain(ag)})
    online_gain = gain(agent)
    print(f"a * sign(x): offline {offline_gain:.2f}, after 3000 online transitions {online_gain:.2f}")
    assert online_gain > 0.5, online_gain
    assert agent.updates == 1500 + 3000  # online_utd 1: one update per collected transition
    assert rows[-1]["online/env_steps"] == 3000 and rows[-1]["step"] == 4500
    assert evals and evals[-1] == 4500 and rows[-1]["eval/gain"] == online_gain  # the final evaluation
    returns = [r["online/return"] for r in rows if "online/return" in r]
    assert returns[-1] > returns[0]  # the training episodes' return rose as well

    # the buffer appends online transitions after the dataset's, and refuses to overflow
    buf = TransitionBuffer(data, 2)
    assert len(buf) == 400 and buf.offline_size == 400
    buf.add(torch.ones(2, 1), torch.ones(2, 1), torch.ones(2), torch.ones(2, 1), torch.ones(2))
    assert len(buf) == 402 and float(buf.rewards[400:].sum()) == 2.0
    torch.testing.assert_close(buf.obs[:400], data.obs)
    with pytest.raises(RuntimeError, match="full"):
        buf.add(torch.ones(1, 1), torch.ones(1, 1), torch.ones(1), torch.ones(1, 1), torch.ones(1))
