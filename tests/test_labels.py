"""Which steps are expert labels (issue 18): decided once per dataset file, never the policy's own
actions, the same count in ``roboreal bc``/``dagger`` as in ``roboreal data info``.

Robot sessions are written with `DatasetWriter` exactly as the recorder writes them
(`roboreal.sim2real.nodes.record_episodes`): ``policy_actions`` at every step, ``intervention`` and the
human's ``expert_actions`` only at takeover steps. The policy's actions are drawn from
[0.1, 0.9] and the human's from [-0.9, -0.1], so the sign of a label says whose it is.
"""

from __future__ import annotations

import re
import warnings

import h5py
import numpy as np
import pytest

from roboreal.agents.bc import BCConfig
from roboreal.agents.dagger import DAggerConfig, collect
from roboreal.cli import main
from roboreal.config import ConfigError
from roboreal.envs import make
from roboreal.data import (DatasetError, DatasetReader, DatasetWriter, dataset_meta,
                                        episodes_to_transitions, load_transitions, require_labels)

EPISODES, STEPS = 10, 23
TAKEOVER_EPISODES = (0, 3, 6, 9)
TAKEOVER_STEPS = range(5, 14)  # 9 steps per takeover episode: 36 labels in all


def _robot_session(path, takeovers: bool = True) -> int:
    """A panda-reach robot session; returns how many steps the human drove (the labels)."""
    env = make("panda-reach", num_envs=1)
    meta = dataset_meta(env, source="robot", expert={"kind": "human"})
    obs_size = env.spec.observation_sizes["policy"]
    action_size = env.spec.action_size
    env.close()
    rng = np.random.default_rng(0)
    human_steps = 0
    with DatasetWriter(path, meta, fsync=False, obs_groups=["policy"]) as w:
        for e in range(EPISODES):
            for t in range(STEPS):
                policy = rng.uniform(0.1, 0.9, action_size)
                human = rng.uniform(-0.9, -0.1, action_size)
                takeover = takeovers and e in TAKEOVER_EPISODES and t in TAKEOVER_STEPS
                human_steps += takeover
                w.add_step({"policy": rng.normal(size=obs_size)}, human if takeover else policy,
                           expert_action=human if takeover else None, policy_action=policy, intervention=takeover)
            w.end_episode(success=None, ended_by="reset")
    return human_steps


def _data_info_labels(path, capsys) -> int:
    capsys.readouterr()
    assert main(["data", "info", str(path)]) == 0
    return int(re.search(r"expert labels (\d+)", capsys.readouterr().out).group(1))


# ----------------------------------------------------------------------------------------------
# The reported defect, on the datasets module

def test_a_session_without_takeovers_is_refused_not_trained_on_the_policys_actions(tmp_path):
    session = tmp_path / "no_takeovers.hdf5"
    assert _robot_session(session, takeovers=False) == 0
    with DatasetReader(session) as r:
        assert r.summary()["labels"] == 0
    for val_fraction in (0.0, 0.1, 0.5):  # used to give 690-style counts: every executed (policy) action
        with pytest.raises(DatasetError) as err:
            load_transitions(session, val_fraction, seed=0)
        text = str(err.value)
        assert str(session) in text and "no labelled step" in text
        assert "expert_actions" in text and "policy's own" in text
    with pytest.raises(DatasetError, match="no labelled step"):
        require_labels([session])


def test_takeover_steps_are_the_only_labels_in_every_split(tmp_path):
    session = tmp_path / "session.hdf5"
    human_steps = _robot_session(session)
    assert human_steps == len(TAKEOVER_EPISODES) * len(TAKEOVER_STEPS)
    with DatasetReader(session) as r:
        summary = r.summary()
    assert summary["labels"] == summary["interventions"] == human_steps
    for val_fraction in (0.0, 0.1, 0.3, 0.5):
        for seed in range(6):
            train, val, meta = load_transitions(session, val_fraction, seed=seed)
            val_labels = val.num_labels if val is not None else 0
            assert train.num_labels + val_labels == summary["labels"], (val_fraction, seed)
            assert (meta["train_labels"], meta["val_labels"]) == (train.num_labels, val_labels)
            for part in (train, val):
                if part is None:
                    continue
                picked = part.labels[part.labeled]
                assert (picked < 0).all(), "a label is the policy's action"  # only the human's actions
                assert part.labels[~part.labeled].isnan().all()  # unlabelled rows carry no usable label
                steps = part.step[part.labeled]
                assert ((steps >= TAKEOVER_STEPS.start) & (steps < TAKEOVER_STEPS.stop)).all()


def test_a_validation_split_without_takeovers_has_no_labels(tmp_path):
    """The exact bug: a validation episode without a takeover had its policy actions counted as labels."""
    session = tmp_path / "session.hdf5"
    human_steps = _robot_session(session)
    with DatasetWriter(session, mode="a", fsync=False) as w:
        w.write_filter_key("train", [f"demo_{i}" for i in range(EPISODES) if i not in (1, 2)])
        w.write_filter_key("valid", ["demo_1", "demo_2"])  # no takeover in either
    train, val, _ = load_transitions(session, 0.1)
    assert val.num_episodes == 2 and val.num_labels == 0 and train.num_labels == human_steps
    # and one with a takeover episode in validation keeps its labels there, and only those
    with DatasetWriter(session, mode="a", fsync=False) as w:
        w.write_filter_key("train", [f"demo_{i}" for i in range(EPISODES) if i not in (2, 3)])
        w.write_filter_key("valid", ["demo_2", "demo_3"])
    train, val, _ = load_transitions(session, 0.1)
    assert val.num_labels == len(TAKEOVER_STEPS) and train.num_labels + val.num_labels == human_steps
    assert (val.labels[val.labeled] < 0).all()


def test_the_label_rule_is_the_files_not_the_splits(tmp_path):
    session = tmp_path / "session.hdf5"
    _robot_session(session)
    with DatasetReader(session) as r:
        source = r.label_source()
        quiet = [r.episode(n) for n in ("demo_1", "demo_2")]  # no takeover in these two
    assert source == "expert"
    assert episodes_to_transitions(quiet, source).num_labels == 0
    # deciding over the two episodes alone finds no expert label, and still never takes the policy's actions
    assert episodes_to_transitions(quiet, "auto").num_labels == 0


def test_a_file_without_labels_among_labelled_ones_is_named_in_a_warning(tmp_path):
    labelled, quiet = tmp_path / "labelled.hdf5", tmp_path / "quiet.hdf5"
    human_steps = _robot_session(labelled)
    _robot_session(quiet, takeovers=False)
    with pytest.warns(UserWarning, match=re.escape(str(quiet))):
        train, val, meta = load_transitions([labelled, quiet], 0.2, seed=1)
    assert train.num_labels + (val.num_labels if val else 0) == human_steps
    assert meta["label_sources"] == {str(labelled): "expert", str(quiet): "demonstrated"}
    assert require_labels([labelled, quiet]) == {str(labelled): human_steps, str(quiet): 0}


def test_teleoperation_data_made_elsewhere_trains_on_its_actions(tmp_path):
    """A robomimic-style file: only obs and actions (no policy ran, no expert_actions field): the
    demonstrator's actions are the labels, counted the same by data info and training."""
    path = tmp_path / "teleop.hdf5"
    rng = np.random.default_rng(1)
    with DatasetWriter(path, {"task": "synthetic"}, fsync=False) as w:
        for _ in range(4):
            for _ in range(7):
                w.add_step({"policy": rng.normal(size=3)}, rng.uniform(-1, 1, 2))
            w.end_episode()
    with h5py.File(path, "a") as f:
        for demo in f["data"].values():
            for key in ("expert_actions", "policy_actions", "intervention"):
                del demo[key]
    with DatasetReader(path) as r:
        summary = r.summary()
    assert summary["label_source"] == "demonstrated" and summary["labels"] == 28
    train, val, _ = load_transitions(path, 0.25, seed=0)
    assert train.num_labels + val.num_labels == 28
    assert val.num_labels == len(val) and val.labels.isfinite().all()


def test_dagger_refuses_training_on_executed_actions():
    with pytest.raises(ConfigError, match="bc.labels"):
        DAggerConfig(bc=BCConfig(labels="executed"))


# ----------------------------------------------------------------------------------------------
# The commands: the counts they print are data info's

def test_dagger_human_refuses_a_session_without_takeovers(tmp_path, capsys):
    session = tmp_path / "no_takeovers.hdf5"
    _robot_session(session, takeovers=False)
    run = tmp_path / "hg"
    capsys.readouterr()
    assert main(["dagger", "--task", "panda-reach", "--expert", "human", "--dataset", str(session), "--run-dir",
                 str(run), "--quiet", "eval_episodes=0", "num_envs=1"]) == 2
    err = capsys.readouterr().err
    assert "no labelled step" in err and "no_takeovers.hdf5" in err and "expert labels" not in err
    assert not run.exists()  # refused before anything was written


def test_dagger_human_counts_equal_data_info(tmp_path, capsys):
    session = tmp_path / "session.hdf5"
    human_steps = _robot_session(session)
    assert _data_info_labels(session, capsys) == human_steps
    run = tmp_path / "hg"
    assert main(["dagger", "--task", "panda-reach", "--expert", "human", "--dataset", str(session), "--run-dir",
                 str(run), "--quiet", "eval_episodes=0", "num_envs=1", "bc.max_epochs=2", "bc.updates_per_epoch=5",
                 "bc.hidden=[32,32]", "bc.val_fraction=0.3"]) == 0
    out = capsys.readouterr().out
    total, train, val = map(int, re.search(r"(\d+) expert labels \((\d+) train / (\d+) val\)", out).groups())
    assert total == train + val == human_steps, out


def test_a_collected_expert_dataset_still_trains_bc_with_data_infos_count(tmp_path, capsys):
    demos = tmp_path / "demos.hdf5"
    collect("panda-reach", "scripted", 4, demos, num_envs=2, seed=3)
    with DatasetReader(demos) as r:
        summary = r.summary()
    assert summary["label_source"] == "expert" and summary["labels"] == summary["steps"]  # every step the expert's
    assert _data_info_labels(demos, capsys) == summary["steps"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a labelled file draws no "no labelled step" warning
        assert main(["bc", str(demos), "--run-dir", str(tmp_path / "bc"), "--eval-episodes", "0", "--quiet",
                     "max_epochs=2", "updates_per_epoch=5", "hidden=[32,32]", "val_fraction=0.25"]) == 0
    out = capsys.readouterr().out
    total, train, val = map(int, re.search(r"BC on (\d+) expert labels \((\d+) train / (\d+) val", out).groups())
    assert total == train + val == summary["steps"] and val > 0, out
