"""Dataset files robomimic loads, labels that say when they are unknown, and reading a file
while it is recorded (issue 18).

robomimic 0.3.0 itself is installed by ``./dev setup`` without its declared dependencies
(torchvision and egl_probe have no CPU-torch build here), so its own ``SequenceDataset``
loads the files in `test_robomimic_sequence_dataset_loads_sim_and_robot_files`. Its
file_utils / models import torchvision, so `robomimic_load` also reproduces what robomimic 0.3
reads from a file with its default training config, key for key (from
robomimic/utils/dataset.py ``SequenceDataset``, robomimic/utils/file_utils.py
``get_env_metadata_from_dataset`` / ``get_shape_metadata_from_dataset`` and
robomimic/utils/env_utils.py ``get_env_class``), to check the details:

* the file opened read-only with ``swmr=True, libver="latest"``;
* ``data.attrs["env_args"]``: JSON with ``env_name``, ``env_kwargs`` and an integer ``type`` of
  its ``EnvType`` (ROBOSUITE_TYPE 1, GYM_TYPE 2, IG_MOMART_TYPE 3), anything else raises
  "code should never reach this point";
* demos: ``mask/<filter_key>`` decoded as UTF-8 when a filter key is given (``train``/``valid``),
  else every key of ``data``; sorted by ``int(name[5:])`` (so every key must be ``demo_N``);
* per demo ``attrs["num_samples"]`` (the index map: one sample per step), ``obs/<key>`` and,
  with ``hdf5_load_next_obs=True`` (the default), ``next_obs/<key>`` for every observation key;
  ``actions``, ``rewards``, ``dones`` cast to float32 (zeros when absent); ``ac_dim`` from
  ``actions.shape[1]``.

The three writers are covered: `BatchedRecorder` (what ``roboreal collect``/``dagger`` write),
the recorder node's `EpisodeBuilder` (robot sessions, no ROS traffic needed) and a plain
`DatasetWriter`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from roboreal.data import (FORMAT, BatchedRecorder, DatasetError, DatasetReader, DatasetWriter,
                                        dataset_meta, load_transitions, train_valid_split)
from roboreal.sim2real.nodes.record_episodes import EpisodeBuilder
from roboreal.sim2real.nodes.step_record import MODES, step_fields

ROBOMIMIC_ENV_TYPES = {1: "ROBOSUITE_TYPE", 2: "GYM_TYPE", 3: "IG_MOMART_TYPE"}
DATASET_KEYS = ("actions", "rewards", "dones")  # robomimic's default config.train.dataset_keys


def robomimic_load(path, obs_keys, filter_key: str | None = None, load_next_obs: bool = True) -> dict:
    """What robomimic 0.3's loader reads from `path` (see the module docstring); raises where it would."""
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        env_meta = json.loads(f["data"].attrs["env_args"])
        assert set(env_meta) >= {"env_name", "type", "env_kwargs"}, env_meta
        if env_meta["type"] not in ROBOMIMIC_ENV_TYPES:
            raise Exception("code should never reach this point")  # robomimic's get_env_class
        assert isinstance(env_meta["env_kwargs"], dict)
        if filter_key is not None:
            demos = [e.decode("utf-8") for e in np.array(f[f"mask/{filter_key}"][:])]
        else:
            demos = list(f["data"].keys())
        demos = [demos[i] for i in np.argsort([int(d[5:]) for d in demos])]
        out = {"env_meta": env_meta, "demos": demos, "total": int(f["data"].attrs["total"]), "data": {}}
        if demos:
            out["ac_dim"] = f[f"data/{demos[0]}/actions"].shape[1]
            out["obs_shapes"] = {k: f[f"data/{demos[0]}/obs/{k}"].shape[1:] for k in obs_keys}
        for ep in demos:
            g = f[f"data/{ep}"]
            n = int(g.attrs["num_samples"])
            d = {"num_samples": n, "obs": {k: g[f"obs/{k}"][()] for k in obs_keys}}
            if load_next_obs:
                d["next_obs"] = {k: g[f"next_obs/{k}"][()] for k in obs_keys}
            for k in DATASET_KEYS:
                d[k] = g[k][()].astype("float32") if k in g else np.zeros((n, 1), np.float32)
            for k, v in [*d["obs"].items(), *d.get("next_obs", {}).items()]:
                assert v.shape[0] == n, f"{ep}/{k}: {v.shape[0]} rows, num_samples {n}"
            for k in DATASET_KEYS:
                assert d[k].shape[0] == n, f"{ep}/{k}: {d[k].shape[0]} rows, num_samples {n}"
            out["data"][ep] = d
        out["num_sequences"] = sum(d["num_samples"] for d in out["data"].values())  # seq_length 1, frame_stack 1
    return out


# ----------------------------------------------------------------------------------------------
# The three writers

def _batched_file(path, num_envs: int = 3, episodes: int = 7, seed: int = 0) -> list[list[dict]]:
    """What `BatchedRecorder` writes from a batched env's step results (a synthetic env: every
    observation says env, episode and step; done envs auto-reset as roboreal envs do)."""
    rng = np.random.default_rng(seed)
    lengths = [[int(rng.integers(3, 7)) for _ in range(10)] for _ in range(num_envs)]
    ep_of, t_of = [0] * num_envs, [0] * num_envs

    def ob(i, e, t):
        return np.array([i, e, t, 100 * i + 10 * e + t], np.float32)

    seen: list[list[dict]] = []
    meta = dataset_meta(task="synthetic-reach", env_overrides={"episode_length_s": 2.0}, source="sim",
                        obs_groups={"policy": 4})
    with DatasetWriter(path, meta, fsync=False) as w:
        rec = BatchedRecorder(w, num_envs, max_episodes=episodes, episode_attrs={"seed": seed})
        running: list[list[dict]] = [[] for _ in range(num_envs)]
        while not rec.done:
            obs = torch.tensor(np.stack([ob(i, ep_of[i], t_of[i]) for i in range(num_envs)]))
            actions = torch.tensor(rng.uniform(-1, 1, (num_envs, 2)), dtype=torch.float32)
            reward = torch.tensor(rng.normal(size=num_envs), dtype=torch.float32)
            final = torch.tensor(np.stack([ob(i, ep_of[i], t_of[i] + 1) for i in range(num_envs)]))
            done = torch.tensor([t_of[i] + 1 == lengths[i][ep_of[i]] for i in range(num_envs)])
            success = torch.tensor([bool(ep_of[i] % 2) for i in range(num_envs)])
            for i in range(num_envs):
                running[i].append({"obs": obs[i].numpy(), "next": final[i].numpy(), "a": actions[i].numpy(),
                                   "r": float(reward[i])})
            names = rec.record({"policy": obs}, actions, reward, done, torch.zeros_like(done),
                               {"final_observation": {"policy": final}, "is_success": success}, expert_actions=actions)
            for i in range(num_envs):
                if done[i]:
                    if len(seen) < episodes:  # the recorder keeps the first `episodes` that end
                        seen.append(running[i])
                    running[i] = []
                    ep_of[i] += 1
                    t_of[i] = 0
                else:
                    t_of[i] += 1
            assert len(names) <= num_envs
    return seen


OBS, ACT, DT = 6, 3, 0.02


def _step(step: int, human: bool = False) -> dict:
    """A robot ~/step record (the recorder's input) whose values say which step it is."""
    k, a = np.arange(OBS, dtype=np.float64), np.arange(ACT, dtype=np.float64)
    return {"step": step, "stamp": 1000.0 + step * DT, "reset_count": 0, "mode": MODES.index("policy"),
            "intervention": float(human), "human_action": float(human), "observation": step * 0.01 + k * 0.001,
            "policy_action": np.tanh(0.1 * step + a) * 0.5, "commanded_action": -0.3 - 0.01 * a,
            "applied_action": np.tanh(0.1 * step + a) * 0.4}


def _robot_file(path, episodes: int = 4, steps: int = 5) -> EpisodeBuilder:
    """A robot session as the recorder node writes it; the operator marks episode 1 a success
    and episode 2 a failure (``~/set_success``), 0 and 3 stay unknown."""
    info = {"node": "/policy_node", "robot": "cartpole", "robot_spec_checksum": "abc", "control_dt": DT,
            "obs_size": OBS, "action_size": ACT, "obs_group": "policy", "step_fields": step_fields(OBS, ACT),
            "modes": list(MODES), "training": {"task": "synthetic", "algo": "ppo", "env_overrides": {"x": 1}},
            "bundle": {"path": "/bundles/x", "manifest_sha256": "f00d"}, "topics": {}}
    from roboreal.sim2real.nodes.record_episodes import dataset_meta_from_info

    b = EpisodeBuilder(lambda i: DatasetWriter(path, dataset_meta_from_info(i, None), mode="x", fsync=False))
    b.set_info(info)
    s = 0
    for e in range(episodes):
        for t in range(steps):
            b.on_step(_step(s, human=t >= 3), 0.0)
            s += 1
        if e in (1, 2):
            assert b.set_success(e == 1)
        b.end("~/end_episode")
    b.writer.close()
    return b


def test_robomimic_loads_what_batched_recorder_writes(tmp_path):
    path = tmp_path / "sim.hdf5"
    seen = _batched_file(path)
    rm = robomimic_load(path, ["policy"])
    assert rm["env_meta"] == {"env_name": "synthetic-reach", "type": 2, "env_kwargs": {"episode_length_s": 2.0}}
    assert rm["demos"] == [f"demo_{i}" for i in range(7)] and rm["ac_dim"] == 2 and rm["obs_shapes"] == {"policy": (4,)}
    assert rm["total"] == rm["num_sequences"] == sum(len(s) for s in seen)
    for name, steps in zip(rm["demos"], seen):
        d = rm["data"][name]
        assert d["num_samples"] == len(steps)
        assert d["obs"]["policy"].dtype == np.float32 and d["next_obs"]["policy"].dtype == np.float32
        np.testing.assert_array_equal(d["obs"]["policy"], np.stack([s["obs"] for s in steps]))
        # each step's next_obs is what it led to; the last one the true final observation, not the reset one
        np.testing.assert_array_equal(d["next_obs"]["policy"], np.stack([s["next"] for s in steps]))
        np.testing.assert_array_equal(d["next_obs"]["policy"][:-1], d["obs"]["policy"][1:])
        np.testing.assert_allclose(d["rewards"], [s["r"] for s in steps], rtol=1e-6)
        np.testing.assert_array_equal(d["dones"], [0] * (len(steps) - 1) + [1])
        np.testing.assert_array_equal(d["actions"], np.stack([s["a"] for s in steps]))
    # the filter keys robomimic's train/valid configs name: a partition of the demos
    train, valid = (robomimic_load(path, ["policy"], key)["demos"] for key in ("train", "valid"))
    assert sorted(train + valid, key=lambda n: int(n[5:])) == rm["demos"] and not set(train) & set(valid)
    assert (train, valid) == train_valid_split(rm["demos"]) and len(valid) == 1
    with DatasetReader(path) as r:
        ep = r.episode(0)
        assert ep.attrs["next_obs_last"] == "observed" and ep.attrs["success_source"] == "env"
        assert r.task == "synthetic-reach" and r.env_kwargs == {"episode_length_s": 2.0}
        assert r.meta["roboreal_env"]["task"] == "synthetic-reach" and r.meta["format"] == FORMAT


def test_robomimic_sequence_dataset_loads_sim_and_robot_files(tmp_path):
    """robomimic's own loader with its default training config (next_obs loaded, the ``train``
    filter key, sequences of 10 padded, the low-dim cache), on a simulation and a robot file."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.utils.dataset import SequenceDataset

    ObsUtils.initialize_obs_utils_with_obs_specs({"obs": {"low_dim": ["policy"]}})
    sim, robot = tmp_path / "sim.hdf5", tmp_path / "robot.hdf5"
    seen = _batched_file(sim)
    _robot_file(robot)
    for path, act_dim in ((sim, 2), (robot, ACT)):
        with DatasetReader(path) as r:
            train, _ = r.split()
            episodes = {name: r.episode(name) for name in train}
        ds = SequenceDataset(hdf5_path=str(path), obs_keys=("policy",), dataset_keys=DATASET_KEYS,
                             load_next_obs=True, frame_stack=1, seq_length=10, pad_frame_stack=True,
                             pad_seq_length=True, get_pad_mask=False, goal_mode=None, hdf5_cache_mode="low_dim",
                             hdf5_use_swmr=True, hdf5_normalize_obs=False, filter_by_attribute="train")
        assert len(ds) == sum(len(ep) for ep in episodes.values())  # one sequence per step
        first = ds[0]  # the first sequence of the first train demo, padded at its end
        ep = episodes[train[0]]
        n = min(10, len(ep))
        assert first["actions"].shape == (10, act_dim) and first["obs"]["policy"].shape[-1] == ep.obs["policy"].shape[1]
        np.testing.assert_allclose(first["obs"]["policy"][:n], ep.obs["policy"][:n], rtol=1e-6)
        np.testing.assert_allclose(first["next_obs"]["policy"][:n], ep.next_obs["policy"][:n], rtol=1e-6)
        np.testing.assert_allclose(first["actions"][:n], ep.actions[:n], rtol=1e-6)
        ds.hdf5_file.close()
    assert len(seen) == 7


def test_robomimic_loads_a_robot_recording_with_unknown_labels_marked(tmp_path, capsys):
    from roboreal.cli import main

    path = tmp_path / "robot.hdf5"
    _robot_file(path)
    rm = robomimic_load(path, ["policy"], "train")  # the failing config of the report: next_obs + filter key
    assert rm["env_meta"]["type"] == 2 and rm["env_meta"]["env_name"] == "synthetic"
    full = robomimic_load(path, ["policy"])
    assert full["total"] == full["num_sequences"] == 20 and full["ac_dim"] == ACT
    for i, name in enumerate(full["demos"]):
        d = full["data"][name]
        obs = np.stack([_step(5 * i + t)["observation"] for t in range(5)]).astype(np.float32)
        np.testing.assert_array_equal(d["obs"]["policy"], obs)
        # a robot episode ends without an observation after its last step: that row repeats the last obs
        np.testing.assert_array_equal(d["next_obs"]["policy"], np.concatenate([obs[1:], obs[-1:]]))
        assert np.isnan(d["rewards"]).all()  # unknown, not 0
    with h5py.File(path, "r") as f:
        attrs = [dict(f[f"data/demo_{i}"].attrs) for i in range(4)]
    assert "success" not in attrs[0] and "success" not in attrs[3]  # unknown: absent, never False
    assert attrs[1]["success"] and attrs[1]["success_source"] == "operator"
    assert not attrs[2]["success"] and attrs[2]["success_source"] == "operator"
    assert all("return" not in a and a["next_obs_last"] == "repeated" for a in attrs)

    with DatasetReader(path) as r:
        s = r.summary()
        assert [r.episode(i).success for i in range(4)] == [None, True, False, None]
    assert s["known"] == {"rewards": 0, "success": 2, "next_obs": 4} and s["success_sources"] == {"operator": 2}
    assert s["success_rate"] == 0.5 and [row["return"] for row in s["rows"]] == [None] * 4
    capsys.readouterr()
    assert main(["data", "info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "known: rewards in 0 of 4 episodes, success in 2 of 4 (2 by operator), next_obs in 4 of 4" in out
    assert "yes (operator)" in out and "no (operator)" in out and "unknown" in out
    assert "success rate 50%" in out


def test_bc_trains_on_a_recording_with_nan_rewards(tmp_path):
    from roboreal.agents.bc import BCConfig, train_bc

    path = tmp_path / "robot.hdf5"
    _robot_file(path, episodes=6)
    train, val, meta = load_transitions(path, 0.2, seed=0)
    assert train.num_labels + (val.num_labels if val else 0) == 6 * 2  # the takeover steps (t = 3, 4)
    assert torch.isfinite(train.obs["policy"]).all() and torch.isfinite(train.labels[train.labeled]).all()
    cfg = BCConfig(hidden=[16], updates_per_epoch=3, max_epochs=2, batch_size=8)
    trainer, result = train_bc(train, val, cfg, seed=0)
    assert result["labels"] == train.num_labels and np.isfinite(result["best_loss"])
    assert all(np.isfinite(v) for v in trainer.evaluate_loss(train))


def test_plain_writer_derives_next_obs_and_refuses_bad_input(tmp_path):
    path = tmp_path / "plain.hdf5"
    obs = np.arange(12, dtype=np.float32).reshape(4, 3)
    with DatasetWriter(path, {"task": "synthetic"}, fsync=False) as w:
        for t in range(4):
            w.add_step({"policy": obs[t]}, np.zeros(2), reward=1.0)
        w.end_episode(final_obs={"policy": np.full(3, 99.0)})  # the observation after the last step
        for t in range(4):
            w.add_step({"policy": obs[t]}, np.zeros(2))  # no reward given: unknown
        w.end_episode()
        w.add_step({"policy": obs[0]}, np.zeros(2))
        with pytest.raises(DatasetError, match="final_obs group 'policy' missing"):
            w.end_episode(final_obs={"other": np.zeros(3)})
        with pytest.raises(DatasetError, match="next_obs group 'policy' missing"):
            w.add_step({"policy": obs[0]}, np.zeros(2), next_obs={"critic": obs[0]})
        with pytest.raises(DatasetError, match="next_obs/policy has size 2"):
            w.add_step({"policy": obs[0]}, np.zeros(2), next_obs={"policy": np.zeros(2)})
        with pytest.raises(DatasetError, match=r"names demos the file lacks: \['demo_7'\]"):
            w.write_filter_key("train", ["demo_0", "demo_7"])
    with DatasetReader(path) as r:
        a, b = r.episode(0), r.episode(1)
    np.testing.assert_array_equal(a.next_obs["policy"], np.concatenate([obs[1:], np.full((1, 3), 99.0)]))
    assert a.attrs["next_obs_last"] == "observed" and a.attrs["return"] == 4.0
    np.testing.assert_array_equal(b.next_obs["policy"][-1], obs[-1])
    assert b.attrs["next_obs_last"] == "repeated" and "return" not in b.attrs and np.isnan(b.rewards).all()
    assert a.success is None and "success" not in a.attrs


# ----------------------------------------------------------------------------------------------
# Filter keys

def test_default_split_is_deterministic_and_a_users_filter_keys_win(tmp_path):
    files = [tmp_path / "a.hdf5", tmp_path / "b.hdf5"]
    for p in files:
        with DatasetWriter(p, {"task": "synthetic"}, fsync=False) as w:
            for e in range(12):
                w.add_step({"policy": np.full(2, e, np.float32)}, np.zeros(1), expert_action=np.zeros(1))
                w.end_episode()
    masks = []
    for p in files:
        with h5py.File(p, "r") as f:
            masks.append([f["mask/train"][()].tolist(), f["mask/valid"][()].tolist()])
    assert masks[0] == masks[1] and len(masks[0][1]) == 1 and len(masks[0][0]) == 11  # round(0.1 * 12)
    with DatasetReader(files[0]) as r:
        assert not r.user_split()
        assert r.split() == ([n.decode() for n in masks[0][0]], [n.decode() for n in masks[0][1]])
        assert r.split(0.0) == (r.names, [])  # the stored default does not override the caller's fraction
        assert len(r.split(0.5, seed=3)[1]) == 6
    train, val, _ = load_transitions(files[0], 0.0)
    assert val is None and train.num_episodes == 12
    # a user's keys are kept on close and win over any fraction; appending keeps them too
    with DatasetWriter(files[0], mode="a", fsync=False) as w:
        w.write_filter_key("train", ["demo_0", "demo_1"])
        w.write_filter_key("valid", ["demo_5"])
    with DatasetWriter(files[0], mode="a", fsync=False) as w:
        w.add_step({"policy": np.zeros(2, np.float32)}, np.zeros(1), expert_action=np.zeros(1))
        w.end_episode()
    with DatasetReader(files[0]) as r:
        assert r.user_split() and r.split(0.0) == (["demo_0", "demo_1"], ["demo_5"])
    # appending to a file with the default split re-splits over every demo
    with DatasetWriter(files[1], mode="a", fsync=False) as w:
        w.add_step({"policy": np.zeros(2, np.float32)}, np.zeros(1), expert_action=np.zeros(1))
        w.end_episode()
    demos = [d for key in ("train", "valid") for d in robomimic_load(files[1], ["policy"], key)["demos"]]
    assert sorted(demos) == sorted(f"demo_{i}" for i in range(13))


# ----------------------------------------------------------------------------------------------
# Older files

def _format1_robot_file(path) -> None:
    """A file as the format-/1 recorder wrote it: env_args type "roboreal", no next_obs, no mask,
    rewards 0 for unknown, num_samples and total."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs.update(format="roboreal-dataset/1", source="robot", task="synthetic", total=6,
                          env_args=json.dumps({"env_name": "synthetic", "type": "roboreal", "env_kwargs": {"x": 2}}))
        for i in range(2):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("obs/policy", data=np.full((3, 4), i, np.float32))
            g.create_dataset("actions", data=np.zeros((3, 2), np.float32))
            g.create_dataset("rewards", data=np.zeros(3, np.float32))
            g.create_dataset("dones", data=np.array([0, 0, 1], np.uint8))
            g.create_dataset("expert_actions", data=np.ones((3, 2), np.float32))
            g.attrs.update(num_samples=3, meta="{}", **{"return": 0.0})


def test_older_files_stay_readable_and_appending_makes_them_loadable(tmp_path):
    path = tmp_path / "old.hdf5"
    _format1_robot_file(path)
    with pytest.raises(Exception, match="code should never reach this point"):
        robomimic_load(path, ["policy"])  # the reported failure
    with DatasetReader(path) as r:
        assert r.task == "synthetic" and r.env_kwargs == {"x": 2} and r.filter_key("train") is None
        ep = r.episode(0)
        assert ep.next_obs is None and np.isnan(ep.rewards).all()  # /1 robot files stored 0 for unknown
        assert r.summary()["known"] == {"rewards": 0, "success": 0, "next_obs": 0}
        assert len(r.split(0.5)[1]) == 1
    train, _, _ = load_transitions(path, 0.0)
    assert train.num_labels == 6
    with DatasetWriter(path, mode="a", fsync=False) as w:  # appending repairs env_args, keeps the provenance
        w.add_step({"policy": np.zeros(4)}, np.zeros(2))
        w.end_episode()
    rm = robomimic_load(path, ["policy"], "train", load_next_obs=False)  # old demos have no next_obs
    assert rm["env_meta"] == {"env_name": "synthetic", "type": 2, "env_kwargs": {"x": 2}}
    with DatasetReader(path) as r:
        assert r.meta["roboreal_env"]["env_kwargs"] == {"x": 2} and r.env_kwargs == {"x": 2}
        assert r.episode(2).next_obs is not None and r.summary()["known"]["next_obs"] == 1


# ----------------------------------------------------------------------------------------------
# Reading while recording

LIVE_WRITER = r'''
import sys, time
import numpy as np
from roboreal.data import DatasetWriter
path, mode = sys.argv[1], sys.argv[2]
def episode(i):
    rng = np.random.default_rng(i)
    T = 3 + i % 5
    return rng.normal(size=(T, 4)).astype(np.float32), rng.uniform(-1, 1, (T, 2)).astype(np.float32)
w = DatasetWriter(path, {"task": "synthetic", "source": "robot"}, fsync=True)
i = 0
while True:
    obs, act = episode(i)
    for t in range(len(act)):
        w.add_step({"policy": obs[t]}, act[t], done=t == len(act) - 1, expert_action=act[t])
    if mode == "step":  # wait with episode i buffered: it must stay invisible
        print(f"RUNNING {i}", flush=True)
        if sys.stdin.readline().strip() != "go":
            break
    w.end_episode(index=i)
    if mode == "step":
        print(f"WROTE {i}", flush=True)
    elif i == 0:
        print("STARTED", flush=True)
    if mode == "loop":  # back to back, but not in a spin: even a busy recorder ends 20 episodes a second at most
        time.sleep(0.05)
    i += 1
w.close()
'''


def _live_episode(i: int):
    rng = np.random.default_rng(i)
    T = 3 + i % 5
    return rng.normal(size=(T, 4)).astype(np.float32), rng.uniform(-1, 1, (T, 2)).astype(np.float32)


def _check_live_prefix(path) -> int:
    """Every episode a reader sees is a finished one, value for value, and they are demo_0..n-1."""
    with DatasetReader(path) as r:
        assert not r.skipped, r.skipped
        assert r.names == [f"demo_{i}" for i in range(len(r))]
        for i, name in enumerate(r.names):
            ep = r.episode(name)
            obs, act = _live_episode(i)
            np.testing.assert_array_equal(ep.obs["policy"], obs)
            np.testing.assert_array_equal(ep.actions, act)
            assert ep.attrs["index"] == i and np.isnan(ep.rewards).all()
        return len(r)


def test_a_second_process_reads_finished_episodes_while_the_writer_records(tmp_path):
    path = tmp_path / "live.hdf5"
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(path), "step"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        for i in range(3):
            assert proc.stdout.readline().strip() == f"RUNNING {i}"
            # the writer holds the file open with episode i buffered: readers see exactly 0..i-1
            assert _check_live_prefix(path) == i
            with h5py.File(path, "r") as f:  # h5py's defaults (file locking on): no BlockingIOError
                assert sorted(k for k in f["data"]) == [f"demo_{j}" for j in range(i)]
            if i:
                assert robomimic_load(path, ["policy"])["demos"] == [f"demo_{j}" for j in range(i)]
            with pytest.raises(DatasetError, match="another DatasetWriter is writing"):
                DatasetWriter(path, mode="a", fsync=False)
            with pytest.raises(DatasetError, match="another DatasetWriter is writing"):
                DatasetWriter(path, mode="w", fsync=False)  # and a truncating one is refused before it truncates
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == f"WROTE {i}"
        assert _check_live_prefix(path) == 3
    finally:
        proc.kill()
        proc.wait()


def test_readers_during_fast_writing_and_after_a_sigkill_see_only_whole_episodes(tmp_path):
    path = tmp_path / "fast.hdf5"
    proc = subprocess.Popen([sys.executable, "-c", LIVE_WRITER, str(path), "loop"], stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        assert proc.stdout.readline().strip() == "STARTED"
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # readers open while episodes land, as fast as they can
            seen.append(_check_live_prefix(path))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    print(f"{len(seen)} reads during writing, episodes seen {seen[0]}..{seen[-1]}")
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] > seen[0]  # it kept writing, we kept reading
    n = _check_live_prefix(path)  # killed: every finished episode intact (at most the running one lost)
    assert n >= seen[-1]
    with h5py.File(path, "r", swmr=True, libver="latest") as f:  # robomimic's open works on the killed file
        assert len([k for k in f["data"]]) == n
    with DatasetWriter(path, mode="a", fsync=False) as w:  # the lock died with the writer: append, split
        assert w.next_index == n
    assert len(robomimic_load(path, ["policy"], "train")["demos"]) + \
        len(robomimic_load(path, ["policy"], "valid")["demos"]) == n


def test_data_info_shows_a_simulators_rewards_and_success_as_known(tmp_path, capsys):
    from roboreal.cli import main

    path = tmp_path / "sim.hdf5"
    _batched_file(path, episodes=4)
    capsys.readouterr()
    assert main(["data", "info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    m = re.search(r"known: rewards in (\d+) of 4 episodes, success in (\d+) of 4 \((\d+) by env\)", out)
    assert m and m.groups() == ("4", "4", "4"), out
    assert "(env)" not in out  # a simulator's success is shown plainly
