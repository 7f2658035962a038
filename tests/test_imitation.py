"""Imitation learning: scripted experts, the HDF5 dataset format (crash safety included),
BC with hindsight relabeling, DAgger vs BC at equal expert labels, HG-DAgger from recorded
interventions, run directories that `load_policy`/`roboreal play` accept, and the CLI.

Fixed seeds; one torch thread (tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from roboreal.agents.bc import BCConfig, relabel_goals, train_bc
from roboreal.agents.dagger import DAgger, DAggerConfig, beta_for_round, collect, rollout
from roboreal.agents.experts import BundleExpert, PolicyExpert, ScriptedPandaExpert, make_expert
from roboreal.agents.policy import evaluate, load_policy
from roboreal.envs import make
from roboreal.data import BatchedRecorder, DatasetReader, DatasetWriter, dataset_meta, load_transitions


def _expert_success(task: str, episodes: int, seed: int) -> float:
    env = make(task, num_envs=episodes, seed=seed)
    expert = ScriptedPandaExpert(env)
    obs, _ = env.reset()
    success = torch.full((episodes,), float("nan"))
    for _ in range(env.spec.max_episode_steps + 1):
        obs, _, terminated, truncated, info = env.step(expert.act(obs, env))
        done = (terminated | truncated) & success.isnan()
        success[done] = info["is_success"].float()[done]
        if not success.isnan().any():
            break
    env.close()
    return float(success.mean())


# ----------------------------------------------------------------------------------------------
# Scripted experts

def test_scripted_expert_reaches_the_goal():
    rate = _expert_success("panda-reach", 32, seed=0)
    print(f"scripted expert, panda-reach: success {rate:.2f} over 32 episodes")
    assert rate >= 0.9  # measured 1.00


def test_scripted_expert_picks_and_places_the_cube():
    rate = _expert_success("panda-pick", 32, seed=0)
    print(f"scripted expert, panda-pick: success {rate:.2f} over 32 episodes")
    assert rate >= 0.8  # measured 0.97-1.00 (32 episodes), 0.95 over 128


# ----------------------------------------------------------------------------------------------
# Dataset format

def test_dataset_records_what_the_env_returned(tmp_path):
    env = make("panda-reach", num_envs=3, seed=4)
    expert = ScriptedPandaExpert(env)
    path = tmp_path / "reach.hdf5"
    seen: list[list[dict]] = [[] for _ in range(3)]
    with DatasetWriter(path, dataset_meta(env, source="sim", expert=expert.describe())) as w:
        rec = BatchedRecorder(w, 3, max_episodes=3, episode_attrs={"seed": 4, "round": 0}, with_states=True)
        obs, _ = env.reset()
        while not rec.done:
            a = expert.act(obs, env)
            state = env.sim.state.copy()
            nxt, r, te, tr, info = env.step(a)
            for i in range(3):
                seen[i].append({"obs": obs["policy"][i].clone(), "a": a[i].clone(), "r": float(r[i]),
                                "next": info["final_observation"]["achieved_goal"][i].clone(), "state": state[i].copy(),
                                "success": bool(info["is_success"][i])})
            rec.record(obs, a, r, te, tr, info, expert_actions=a, states=state)
            obs = nxt
    env.close()
    with DatasetReader(path) as r:
        assert r.names == ["demo_0", "demo_1", "demo_2"]
        assert r.task == "panda-reach" and r.meta["robot"] == "panda" and r.meta["source"] == "sim"
        assert r.meta["env_args"]["env_name"] == "panda-reach" and r.meta["total"] == 150
        assert r.meta["expert"]["kind"] == "scripted" and r.meta["obs_groups"]["policy"] == 20
        for name in r.names:
            ep = r.episode(name)
            i = ep.attrs["env_index"]
            steps = seen[i]
            assert len(ep) == 50 and ep.dones[-1] == 1 and ep.dones[:-1].sum() == 0
            np.testing.assert_array_equal(ep.obs["policy"], torch.stack([s["obs"] for s in steps]).numpy())
            np.testing.assert_array_equal(ep.actions, torch.stack([s["a"] for s in steps]).numpy())
            np.testing.assert_array_equal(ep.expert_actions, ep.actions)
            assert np.isnan(ep.policy_actions).all() and ep.intervention.sum() == 0 and ep.labeled.all()
            # the last next_obs is the true final observation, not the auto-reset one
            np.testing.assert_array_equal(ep.next_obs["achieved_goal"], torch.stack([s["next"] for s in steps]).numpy())
            np.testing.assert_array_equal(ep.states, np.stack([s["state"] for s in steps]))
            np.testing.assert_allclose(ep.rewards, [s["r"] for s in steps], rtol=1e-6)
            assert ep.attrs["success"] == steps[-1]["success"] and ep.attrs["seed"] == 4 and ep.attrs["round"] == 0
            assert ep.attrs["num_samples"] == 50


GENERATOR = r'''
import numpy as np
def make_episode(i):
    rng = np.random.default_rng(1000 + i)
    T = 5 + i % 7
    obs = {"policy": rng.normal(size=(T, 4)).astype(np.float32), "achieved_goal": rng.normal(size=(T, 3)).astype(np.float32)}
    act = rng.uniform(-1, 1, size=(T, 2)).astype(np.float32)
    rew = rng.normal(size=T).astype(np.float32)
    return obs, act, rew
'''

WRITER = GENERATOR + r'''
import sys, time
from roboreal.data import DatasetWriter
path, finished, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = DatasetWriter(path, {"task": "synthetic", "source": "robot"}, fsync=(mode == "pause"))
i = 0
while mode == "loop" or i <= finished:
    obs, act, rew = make_episode(i)
    for t in range(len(act)):
        intervene = t % 3 == 0
        w.add_step({k: v[t] for k, v in obs.items()}, act[t], rew[t], t == len(act) - 1,
                   expert_action=act[t] if intervene else None, policy_action=-act[t], intervention=intervene)
        if mode == "pause" and i == finished and t == 2:
            print("MID-EPISODE", flush=True)   # episode `finished` is running, unwritten
            time.sleep(60)
    w.end_episode(success=bool(i % 2), index=i)
    if i == 0:
        print("STARTED", flush=True)
    i += 1
'''


def _generated(i: int):
    ns: dict = {}
    exec(GENERATOR, ns)
    return ns["make_episode"](i)


def _check_prefix(path, expect: int | None = None) -> int:
    with DatasetReader(path) as r:
        n = len(r)
        assert not r.skipped
        assert r.names == [f"demo_{i}" for i in range(n)]
        if expect is not None:
            assert n == expect
        for i, name in enumerate(r.names):
            ep = r.episode(name)
            obs, act, rew = _generated(i)
            np.testing.assert_array_equal(ep.actions, act)
            np.testing.assert_array_equal(ep.policy_actions, -act)
            np.testing.assert_array_equal(ep.rewards, rew)
            for k in obs:
                np.testing.assert_array_equal(ep.obs[k], obs[k])
            intervene = np.arange(len(act)) % 3 == 0
            np.testing.assert_array_equal(ep.intervention.astype(bool), intervene)
            np.testing.assert_array_equal(ep.labeled, intervene)
            np.testing.assert_array_equal(ep.expert_actions[intervene], act[intervene])
            assert ep.attrs["success"] == bool(i % 2) and ep.attrs["index"] == i
        total = sum(r.length(nm) for nm in r.names)
        assert r.meta["total"] == total  # the link and the count are one commit (the writer's undo journal)
    return n


def test_a_writer_killed_mid_episode_leaves_every_finished_episode_intact(tmp_path):
    path = tmp_path / "robot.hdf5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "5", "pause"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["STARTED", "MID-EPISODE"], lines
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _check_prefix(path, expect=5) == 5  # demos 0..4 exactly as written; the running 6th is gone
    # the file is valid HDF5 and can be continued in append mode
    with DatasetWriter(path, mode="a", fsync=False) as w:
        obs, act, rew = _generated(5)
        for t in range(len(act)):
            intervene = t % 3 == 0
            w.add_step({k: v[t] for k, v in obs.items()}, act[t], rew[t], t == len(act) - 1,
                       expert_action=act[t] if intervene else None, policy_action=-act[t], intervention=intervene)
        assert w.end_episode(success=True, index=5) == "demo_5"
    assert _check_prefix(path, expect=6) == 6
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["source"] == "robot"


def test_writers_killed_at_random_moments_never_lose_a_finished_episode(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(3):
        path = tmp_path / f"loop{trial}.hdf5"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "0", "loop"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "STARTED"
            time.sleep(float(rng.uniform(0.05, 0.4)))  # writing episodes as fast as it can
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        n = _check_prefix(path)
        print(f"kill {trial}: {n} finished episodes intact")
        assert n >= 1


def test_writer_refuses_inconsistent_steps(tmp_path):
    from roboreal.data import DatasetError

    with DatasetWriter(tmp_path / "x.hdf5", fsync=False) as w:
        w.add_step({"policy": np.zeros(3)}, np.zeros(2))
        with pytest.raises(DatasetError, match="obs/policy has size 4"):
            w.add_step({"policy": np.zeros(4)}, np.zeros(2))
        with pytest.raises(DatasetError, match="observation group 'critic' missing"):
            DatasetWriter(tmp_path / "y.hdf5", obs_groups=["policy", "critic"], fsync=False).add_step(
                {"policy": np.zeros(3)}, np.zeros(2))
        w.discard_episode()
        assert w.end_episode() is None  # nothing buffered, nothing written
    with DatasetReader(tmp_path / "x.hdf5") as r:
        assert len(r) == 0


def _synthetic_file(path, episodes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, {"task": "synthetic"}, fsync=False) as w:
        for e in range(episodes):
            T = int(rng.integers(3, 9))
            ag = np.cumsum(rng.normal(size=(T + 1, 3)), axis=0).astype(np.float32)
            goal = rng.normal(size=3).astype(np.float32)
            for t in range(T):
                ob = rng.normal(size=5).astype(np.float32)
                obs = {"observation": ob, "achieved_goal": ag[t], "desired_goal": goal,
                       "policy": np.concatenate([ob, goal])}
                nxt = {**obs, "achieved_goal": ag[t + 1]}
                a = np.full(2, e + t / 100, np.float32)
                w.add_step(obs, a, 0.0, t == T - 1, expert_action=a, next_obs=nxt)
            w.end_episode(success=bool(e % 3 == 0))


def test_train_validation_split_is_by_episode(tmp_path):
    path = tmp_path / "s.hdf5"
    _synthetic_file(path, 20)
    with DatasetReader(path) as r:
        train, val = r.split(0.25, seed=3)
        assert len(val) == 5 and len(train) == 15
        assert set(train).isdisjoint(val) and sorted(train + val, key=r.names.index) == r.names
        assert r.split(0.25, seed=3) == (train, val) and r.split(0.25, seed=4) != (train, val)
        assert r.split(0.01, seed=0)[1] != []  # at least one validation episode
    tr, va, meta = load_transitions(path, 0.25, seed=3)
    assert tr.num_episodes == 15 and va.num_episodes == 5
    assert {n.split(":")[1] for n in tr.names} == set(train) and {n.split(":")[1] for n in va.names} == set(val)
    # every step of an episode sits on one side: labels encode (episode, step) as e + t/100
    train_eps = {int(x) for x in tr.labels[:, 0].floor().tolist()}
    val_eps = {int(x) for x in va.labels[:, 0].floor().tolist()}
    assert train_eps.isdisjoint(val_eps) and len(train_eps | val_eps) == 20
    # robomimic filter keys win over the seeded split
    with DatasetWriter(path, mode="a", fsync=False) as w:
        w.write_filter_key("train", [f"demo_{i}" for i in range(18)])
        w.write_filter_key("valid", ["demo_18", "demo_19"])
    with DatasetReader(path) as r:
        assert r.split(0.5, seed=0) == ([f"demo_{i}" for i in range(18)], ["demo_18", "demo_19"])


def test_hindsight_relabeling_uses_goals_the_same_demo_achieved_later(tmp_path):
    path = tmp_path / "g.hdf5"
    _synthetic_file(path, 12, seed=1)
    ts, _, _ = load_transitions(path, 0.0)
    idx = torch.arange(len(ts))
    gen = torch.Generator().manual_seed(0)
    goals, picked = relabel_goals(ts, idx, 1.0, "future", gen)
    assert picked.all()
    for j in range(len(ts)):
        ep = ts.episode[j]
        later = (ts.episode == ep) & (torch.arange(len(ts)) >= j)  # steps t..T-1 of the same episode
        candidates = ts.next_achieved[later]
        assert (candidates == goals[j]).all(-1).any(), f"step {j}: relabeled goal is not achieved later in its episode"
    # all achievable futures get drawn (not just the next or the last step)
    first = (ts.step == 0).nonzero().squeeze(-1)[0]
    span = int(ts.episode_end[first] - first)
    draws = {tuple(relabel_goals(ts, first.repeat(400), 1.0, "future", gen)[0][k].tolist()) for k in range(400)}
    assert len(draws) == span
    # "final": the achieved goal after the episode's last step
    goals, _ = relabel_goals(ts, idx, 1.0, "final", gen)
    assert torch.equal(goals, ts.next_achieved[ts.episode_end - 1])
    # fraction 0 keeps the demonstrations' goals; 0.5 relabels about half
    goals, picked = relabel_goals(ts, idx, 0.0, "future", gen)
    assert torch.equal(goals, ts.obs["desired_goal"]) and not picked.any()
    big = torch.randint(0, len(ts), (4000,), generator=gen)
    goals, picked = relabel_goals(ts, big, 0.5, "future", gen)
    assert 0.45 < picked.float().mean() < 0.55
    assert torch.equal(goals[~picked], ts.obs["desired_goal"][big[~picked]])
    # relabeling never crosses a train/validation boundary: subsets keep their own episode ends
    sub = ts.select_episodes([1, 4])
    g, _ = relabel_goals(sub, torch.arange(len(sub)), 1.0, "future", gen)
    own = {tuple(x) for x in sub.next_achieved.tolist()}
    assert all(tuple(x) in own for x in g.tolist())


def test_data_info_summarises_episodes(tmp_path, capsys):
    from roboreal.cli import main

    path = tmp_path / "robot.hdf5"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(path), "3", "finish"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert main(["data", "info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # 4 episodes (0..3) of 5, 6, 7, 8 steps; successes on odd ones; every third step a takeover
    assert "demo_3" in out and "4 episodes, 26 steps" in out
    assert "success rate 50%" in out
    interventions = sum(len(range(0, 5 + i, 3)) for i in range(4))
    assert f"interventions {interventions} steps in 4 episodes" in out
    assert f"expert labels {interventions}" in out
    assert main(["data", "info", str(tmp_path / "missing.hdf5")]) == 2


# ----------------------------------------------------------------------------------------------
# BC and DAgger on panda-reach

def test_bc_from_scripted_demonstrations_reaches(tmp_path):
    t0 = time.perf_counter()
    path = tmp_path / "demos.hdf5"
    stats = collect("panda-reach", "scripted", 20, path, num_envs=8, seed=0)
    assert stats["episodes"] == 20 and stats["labels"] == 1000 and stats["success_rate"] == 1.0
    train, val, _ = load_transitions(path, val_fraction=0.0)
    cfg = BCConfig(hidden=[256, 256], max_epochs=40, updates_per_epoch=50, val_fraction=0.0)
    trainer, result = train_bc(train, val, cfg, seed=0)
    env = make("panda-reach", num_envs=64, seed=12345)
    score = evaluate(trainer.policy(), env)["success_rate"]
    env.close()
    print(f"BC, panda-reach, 20 demos (1000 labels): success {score:.2f} over 64 episodes "
          f"({time.perf_counter() - t0:.0f} s)")
    assert score >= 0.85  # measured 0.95-1.00 over seeds 0-2


def test_bc_early_stopping_keeps_the_best_validation_weights(tmp_path):
    path = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 8, path, num_envs=8, seed=1)
    train, val, _ = load_transitions(path, val_fraction=0.25, seed=0)
    assert val is not None and val.num_episodes == 2
    cfg = BCConfig(hidden=[64, 64], max_epochs=200, updates_per_epoch=20, patience=5, val_fraction=0.25)
    trainer, result = train_bc(train, val, cfg, seed=0)
    losses = [r["val_loss"] for r in result["history"]]
    assert result["stopped_early"] and result["epochs"] < 200
    assert result["best_epoch"] == 1 + int(np.argmin(losses))
    assert result["epochs"] == result["best_epoch"] + cfg.patience  # stopped `patience` epochs after the best
    assert trainer.evaluate_loss(val)[0] == pytest.approx(min(losses), rel=1e-4)  # best weights restored


def test_cosine_schedule_decays_each_fit_and_restarts_for_the_next(tmp_path):
    path = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 4, path, num_envs=4, seed=2)
    train, _, _ = load_transitions(path, val_fraction=0.0, seed=0)
    cfg = BCConfig(hidden=[32], max_epochs=4, updates_per_epoch=5, patience=10, learning_rate=1e-3,
                   lr_schedule="cosine", lr_final_fraction=0.1)
    trainer, _ = train_bc(train, None, cfg, seed=0)
    seen: list[float] = []
    step = trainer.optimizer.step

    def record_step(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record_step
    for _ in range(2):  # a second fit (DAgger's warm start) starts the decay again
        trainer.fit(train, None, fit_normalizer=False, max_epochs=2)
    first, second = seen[:10], seen[10:]
    assert first == second and len(first) == 10
    assert first[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(first, first[1:]))
    assert first[-1] > 1e-4 and first[-1] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + np.cos(np.pi * 9 / 10)))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # left at the base rate
    with pytest.raises(Exception, match="lr_final_fraction"):
        BCConfig(lr_final_fraction=1.5)


def test_ema_weights_are_the_ones_validated_and_kept_while_training_goes_on_from_the_raw_ones(tmp_path):
    path = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 6, path, num_envs=6, seed=3)
    train, val, _ = load_transitions(path, val_fraction=0.34, seed=0)
    cfg = BCConfig(hidden=[32], max_epochs=5, updates_per_epoch=4, patience=10, ema_decay=0.8)
    from roboreal.agents.bc import BCTrainer

    trainer = BCTrainer(train.obs["policy"].shape[1], train.labels.shape[1], cfg, seed=0)
    raw_after_step: list[dict] = []
    step = trainer.optimizer.step

    def record_step(*args, **kwargs):
        out = step(*args, **kwargs)
        raw_after_step.append({k: v.detach().clone() for k, v in trainer.actor.state_dict().items()})
        return out

    trainer.optimizer.step = record_step
    seen: list[dict] = []  # what was validated at each epoch's end
    result = trainer.fit(train, val, log=lambda row: seen.append(
        {k: v.detach().clone() for k, v in trainer.actor.state_dict().items()}))
    expected = {k: v.clone() for k, v in raw_after_step[0].items()}
    for state in raw_after_step[1:]:
        for k in expected:
            expected[k] = 0.8 * expected[k] + 0.2 * state[k]
    for k in expected:
        torch.testing.assert_close(seen[-1][k], expected[k])  # the last validated weights: the average
    assert any(not torch.equal(seen[-1][k], raw_after_step[-1][k]) for k in expected)  # not the raw ones
    # after an epoch's validation, training continued from the raw weights, not the average
    first_of_epoch_2 = raw_after_step[cfg.updates_per_epoch]
    assert any(not torch.equal(first_of_epoch_2[k], seen[0][k]) for k in expected)
    kept = trainer.actor.state_dict()
    for k in expected:
        torch.testing.assert_close(kept[k], seen[result["best_epoch"] - 1][k])
    with pytest.raises(Exception, match="ema_decay"):
        BCConfig(ema_decay=1.0)


def test_goal_conditioned_bc_with_relabeling_trains_on_relabeled_goals(tmp_path):
    path = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 4, path, num_envs=4, seed=2)
    train, _, _ = load_transitions(path, val_fraction=0.0)
    cfg = BCConfig(hidden=[64, 64], max_epochs=2, updates_per_epoch=5, val_fraction=0.0, relabel_fraction=0.5)
    trainer, _ = train_bc(train, None, cfg, seed=0)
    x = trainer._inputs(train, torch.arange(len(train)), relabel=True)
    goals = x[:, -3:]
    relabeled = ~(goals == train.obs["desired_goal"]).all(-1)
    assert 0.35 < relabeled.float().mean() < 0.65
    assert torch.equal(x[:, :-3], train.obs["observation"])  # the observation part is untouched
    with pytest.raises(Exception, match="relabel_fraction"):
        BCConfig(relabel_fraction=1.5)


# panda-pick with one fixed goal (beside the bin, 12 cm up): the goal needs no generalisation,
# so what is left is the compounding error of grasping (a learner slightly off the cube
# reaches states no demonstration shows).
FIXED_GOAL = {"goal_low": [0.45, 0.2, 0.15], "goal_high": [0.45, 0.2, 0.15], "goal_in_air_fraction": 1.0,
              "goal_air_height": [0.12, 0.12]}


def test_dagger_beats_bc_at_equal_expert_labels(tmp_path):
    """The compounding-error story, measured at 1500 expert labels (15 episodes' worth).

    BC: 15 scripted demonstrations. DAgger: 5 demonstrations, then 2 rounds of 5 episodes
    rolled out by the beta-mixture (beta = 0.5, 0.25) with every visited state labelled by
    the expert, retrained on the aggregate. Same network, same updates per fit, same 64
    evaluation episodes. More seeds and budgets: ``python -m roboreal.agents.imitation_benchmark``.
    """
    t0 = time.perf_counter()
    bc_cfg = BCConfig(hidden=[256, 256], max_epochs=40, updates_per_epoch=50, val_fraction=0.0)
    demos = tmp_path / "demos.hdf5"
    collect("panda-pick", "scripted", 15, demos, num_envs=5, seed=0, env_overrides=FIXED_GOAL)
    train, _, _ = load_transitions(demos, 0.0)
    bc_policy = train_bc(train, None, bc_cfg, seed=0)[0].policy()
    cfg = DAggerConfig(rounds=2, initial_episodes=5, episodes_per_round=5, num_envs=5, eval_episodes=0,
                       beta_schedule="exponential", beta_decay=0.5, bc=bc_cfg)
    history = DAgger("panda-pick", lambda env: ScriptedPandaExpert(env), cfg, tmp_path / "dagger", seed=0,
                     env_overrides=FIXED_GOAL).run()
    assert history[-1]["labels"] == train.num_labels == 1500
    dagger_policy = load_policy(tmp_path / "dagger", "last")[0]
    env = make("panda-pick", num_envs=64, seed=12345, **FIXED_GOAL)
    bc_rate = evaluate(bc_policy, env)["success_rate"]
    dagger_rate = evaluate(dagger_policy, env)["success_rate"]
    env.close()
    print(f"panda-pick (fixed goal) at 1500 expert labels: BC {bc_rate:.2f}, DAgger {dagger_rate:.2f} "
          f"({time.perf_counter() - t0:.0f} s)")
    assert dagger_rate >= bc_rate + 0.2
    assert dagger_rate >= 0.8


def test_bc_run_directory_is_a_runner_run_directory(tmp_path):
    """`roboreal bc` writes config.yaml + checkpoints/{best,last}.pt that `load_policy` (play, export) reads."""
    from roboreal.cli import main

    data = tmp_path / "demos.hdf5"
    assert main(["collect", "panda-reach", "--expert", "scripted", "--episodes", "4", "--out", str(data),
                 "--num-envs", "4", "--seed", "3"]) == 0
    run = tmp_path / "bc_run"
    assert main(["bc", str(data), "--run-dir", str(run), "--quiet", "--eval-episodes", "4", "max_epochs=2",
                 "updates_per_epoch=5", "hidden=[32,32]"]) == 0
    for f in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "progress.csv", "metrics.json"):
        assert (run / f).is_file(), f
    module, info = load_policy(run)
    assert info["task"] == "panda-reach" and info["algo"] == "bc" and info["obs_group"] == "policy"
    assert info["obs_size"] == 20 and info["action_size"] == 7 and info["step"] == 150  # labels trained on
    assert main(["play", str(run), "--episodes", "2"]) == 0
    assert main(["export", str(run)]) == 0  # a bundle (ONNX + TorchScript + manifest) from the BC run
    # the same policy as an expert: from the run directory and from its bundle
    env = make("panda-reach", num_envs=2, seed=0)
    obs, _ = env.reset()
    expert = make_expert(str(run), env)
    assert isinstance(expert, PolicyExpert) and torch.equal(expert.act(obs, env), module(obs["policy"]))
    bundle_expert = make_expert(str(run / "bundle"), env)
    assert isinstance(bundle_expert, BundleExpert)
    torch.testing.assert_close(bundle_expert.act(obs, env), module(obs["policy"]), atol=1e-5, rtol=1e-5)
    env.close()


def test_privileged_teacher_reads_the_critic_group():
    env = make("go1-walk", num_envs=2, seed=0)
    obs, _ = env.reset()
    size = env.spec.observation_sizes["critic"]
    assert size != env.spec.observation_sizes["policy"]
    teacher = torch.nn.Linear(size, env.spec.action_size)
    expert = PolicyExpert(teacher, obs_group="critic")
    torch.testing.assert_close(expert.act(obs, env), teacher(obs["critic"]).clamp(-1, 1))
    env.close()


def test_beta_schedules():
    cfg = DAggerConfig(beta_schedule="exponential", beta_decay=0.5)
    assert [beta_for_round(cfg, i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]
    cfg = DAggerConfig(beta_schedule="linear", beta_rounds=4)
    assert [beta_for_round(cfg, i) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    cfg = DAggerConfig(beta_schedule="indicator")
    assert [beta_for_round(cfg, i) for i in range(3)] == [1.0, 0.0, 0.0]
    cfg = DAggerConfig(beta_schedule="constant", beta=0.3)
    assert [beta_for_round(cfg, i) for i in range(3)] == [1.0, 0.3, 0.3]


def test_hg_dagger_labels_only_takeovers_and_trains_on_the_recorded_session(tmp_path):
    """HG-DAgger: the learner drives, a (simulated) human takes over when it strays; only takeover
    steps carry labels. The session file is what a robot recording looks like, and the DAgger
    trainer aggregates it with the demonstrations without any online expert."""
    demos = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 3, demos, num_envs=3, seed=5)
    train, _, _ = load_transitions(demos, 0.0)
    small = BCConfig(hidden=[64, 64], max_epochs=5, updates_per_epoch=20, val_fraction=0.0)
    learner = train_bc(train, None, small, seed=0)[0].policy()
    env = make("panda-reach", num_envs=4, seed=6)
    human = ScriptedPandaExpert(env)
    session = tmp_path / "session.hdf5"
    with DatasetWriter(session, dataset_meta(env, source="robot", expert={"kind": "human"})) as w:
        rec = BatchedRecorder(w, 4, episode_attrs={"operator": "simulated"})
        stats = rollout(env, human, rec, 4, learner=learner, gate_threshold=0.5, gate_release=0.2, seed=0)
    env.close()
    with DatasetReader(session) as r:
        for ep in r:
            take = ep.intervention.astype(bool)
            np.testing.assert_array_equal(ep.labeled, take)  # labels exactly at the takeovers
            np.testing.assert_array_equal(ep.actions[take], ep.expert_actions[take])  # the human's action ran
            np.testing.assert_array_equal(ep.actions[~take], ep.policy_actions[~take])  # elsewhere the learner's
            assert np.isfinite(ep.policy_actions).all()
        summary = r.summary()
    assert 0 < summary["interventions"] < summary["steps"] == 200
    assert summary["labels"] == summary["interventions"] == stats["interventions"] == stats["labels"]
    cfg = DAggerConfig(eval_episodes=8, bc=small)
    history = DAgger("panda-reach", None, cfg, tmp_path / "hg", datasets=[demos, session]).run()
    assert len(history) == 1 and history[0]["labels"] == 150 + summary["interventions"]
    module, info = load_policy(tmp_path / "hg")
    assert info["algo"] == "dagger" and info["step"] == history[0]["labels"]


def test_dagger_cli_writes_a_run_with_its_aggregated_dataset(tmp_path, capsys):
    from roboreal.cli import main

    run = tmp_path / "dagger"
    args = ["dagger", "--task", "panda-reach", "--expert", "scripted", "--rounds", "1", "--run-dir", str(run),
            "--quiet", "initial_episodes=2", "episodes_per_round=2", "num_envs=2", "eval_episodes=4",
            "bc.max_epochs=2", "bc.updates_per_epoch=5", "bc.hidden=[32,32]", "bc.val_fraction=0"]
    assert main(args) == 0
    for f in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "checkpoints/round_001.pt",
              "progress.csv", "metrics.json", "data.hdf5"):
        assert (run / f).is_file(), f
    with DatasetReader(run / "data.hdf5") as r:
        rounds = [r.episode_attrs(n)["round"] for n in r.names]
        assert rounds == [0, 0, 1, 1]
        betas = [r.episode_attrs(n)["beta"] for n in r.names]
        assert betas == [1.0, 1.0, 0.5, 0.5]
        ep = r.episode(3)
        assert ep.labeled.all() and np.isfinite(ep.policy_actions).all()  # DAgger: every visited state labelled
    assert load_policy(run)[1]["algo"] == "dagger"
    capsys.readouterr()
    assert main(args[:-1] + ["bc.hiden=[1]"]) == 2
    assert "bc.hiden: unknown field" in capsys.readouterr().err


def test_dagger_distills_a_privileged_teacher_into_a_policy_observation_student(tmp_path):
    """Student-teacher: the teacher reads the privileged ``critic`` group, the student the
    ``policy`` group; DAgger labels the student's own states with the teacher's actions."""
    torch.manual_seed(0)
    env = make("go1-walk", num_envs=1)
    n_critic, n_policy, n_act = (env.spec.observation_sizes["critic"], env.spec.observation_sizes["policy"],
                                 env.spec.action_size)
    env.close()
    teacher_net = torch.nn.Sequential(torch.nn.Linear(n_critic, n_act), torch.nn.Tanh())
    with torch.no_grad():  # a teacher that leans on what the student sees, plus some privileged state
        teacher_net[0].weight.mul_(2.0)
        teacher_net[0].weight[:, n_policy:].mul_(0.2)
    teacher = PolicyExpert(teacher_net, obs_group="critic")
    cfg = DAggerConfig(rounds=2, initial_episodes=4, episodes_per_round=4, num_envs=4, eval_episodes=0,
                       bc=BCConfig(hidden=[128, 128], max_epochs=15, updates_per_epoch=40, val_fraction=0.0))
    history = DAgger("go1-walk", teacher, cfg, tmp_path / "distill", env_overrides={"episode_length_s": 1.0}).run()
    student, info = load_policy(tmp_path / "distill", "last")
    assert info["obs_group"] == "policy" and info["obs_size"] == n_policy and len(history) == 3
    # on fresh states visited by the student, its actions follow the teacher's
    env = make("go1-walk", num_envs=16, seed=99, episode_length_s=1.0)
    obs, _ = env.reset()
    student_a, teacher_a = [], []
    for _ in range(25):
        student_a.append(student(obs["policy"]))
        teacher_a.append(teacher.act(obs, env))
        obs, *_ = env.step(student_a[-1])
    env.close()
    a_s, a_t = torch.cat(student_a), torch.cat(teacher_a)
    mse, var = float((a_s - a_t).square().mean()), float(a_t.var(dim=0).mean())
    print(f"distillation: student-teacher action MSE {mse:.5f}, teacher action variance {var:.5f}")
    assert mse < 0.25 * var


def test_robot_recordings_with_only_the_policy_group_combine_with_simulation_data(tmp_path):
    sim = tmp_path / "sim.hdf5"
    _synthetic_file(sim, 3)
    robot = tmp_path / "robot.hdf5"
    with DatasetWriter(robot, {"task": "synthetic", "source": "robot"}, fsync=False) as w:
        for t in range(4):
            w.add_step({"policy": np.full(8, t, np.float32)}, np.zeros(2), expert_action=np.ones(2) if t % 2 else None,
                       policy_action=np.zeros(2), intervention=bool(t % 2))
        w.end_episode(success=None)
    train, _, _ = load_transitions([sim, robot], 0.0)
    assert set(train.obs) == {"policy"} and train.next_achieved is None  # the groups both have
    assert train.num_episodes == 4 and train.num_labels == (len(train) - 4) + 2  # sim: all; robot: takeovers
    with pytest.raises(Exception, match="sizes"):
        bad = tmp_path / "bad.hdf5"
        with DatasetWriter(bad, fsync=False) as w:
            w.add_step({"policy": np.zeros(5)}, np.zeros(2), expert_action=np.zeros(2))
            w.end_episode()
        load_transitions([sim, bad], 0.0)
