"""LeRobot v3.0 export/import (roboreal.data.lerobot).

The layout is checked against LeRobot's published v3.0 description (meta/info.json fields,
data/meta path templates, episodes metadata, tasks table, stats), written out here
independently of the exporter's code: LeRobot itself cannot be installed on this machine (it
pulls a CUDA torch), so these tests stand in for loading the export with LeRobot.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from roboreal.data.lerobot import export_lerobot_v3, import_lerobot_v3
from roboreal.data import DatasetError, DatasetReader, DatasetWriter, load_transitions

LENGTHS = [5, 9, 3, 7]
STATS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


def _roboreal_file(path) -> None:
    """4 episodes of different lengths: expert labels on even steps only (NaN elsewhere), a
    policy in the odd episodes (with takeovers), unknown (NaN) rewards in episode 2."""
    rng = np.random.default_rng(0)
    with DatasetWriter(path, {"task": "synthetic", "control_dt": 0.02}, fsync=False) as w:
        for e, T in enumerate(LENGTHS):
            for t in range(T):
                obs = {"policy": rng.normal(size=4).astype(np.float32), "critic": rng.normal(size=6).astype(np.float32)}
                a = rng.normal(size=2).astype(np.float32)
                w.add_step(obs, a, float("nan") if e == 2 else float(e + t), t == T - 1,
                           expert_action=a + 1 if t % 2 == 0 else None,
                           policy_action=a * 0.5 if e % 2 else None, intervention=e % 2 == 1 and t % 2 == 0)
            w.end_episode(success=e % 2 == 0)


@pytest.fixture
def exported(tmp_path):
    src = tmp_path / "demos.hdf5"
    _roboreal_file(src)
    # tiny files and 2 files per chunk: several data files in several chunks
    res = export_lerobot_v3(src, tmp_path / "lr", data_files_size_in_mb=0.0008, chunks_size=2)
    return src, tmp_path / "lr", res


def _column(table, key: str) -> np.ndarray:
    col = table.column(key).combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def test_export_writes_the_lerobot_v3_layout(exported):
    src, root, res = exported
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == 50 and isinstance(info["fps"], int)  # 1 / control_dt, an int as LeRobot has it
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (4, sum(LENGTHS), 1)
    assert info["chunks_size"] == 2 and isinstance(info["data_files_size_in_mb"], (int, float))
    assert info["data_path"] == DATA_PATH and info["video_path"] is None
    assert info["splits"] == {"train": "0:4"}
    features = info["features"]
    for key in ("observation.state", "action", "next.reward", "next.done", "timestamp", "frame_index",
                "episode_index", "index", "task_index", "observation.critic", "expert_action", "policy_action",
                "intervention", "labelled"):
        assert set(features[key]) >= {"dtype", "shape", "names"}, key
        assert isinstance(features[key]["shape"], list)
    assert features["observation.state"]["shape"] == [4] and features["action"]["shape"] == [2]
    assert features["observation.critic"]["shape"] == [6]
    for key, dtype in {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                       "task_index": "int64", "next.done": "bool"}.items():
        assert features[key] == {"dtype": dtype, "shape": [1], "names": None}
    assert all("/" not in k for k in features)  # LeRobot refuses '/' in feature names

    # data files: many episodes per file, rolled over by size and chunked by chunks_size
    files = sorted(root.glob("data/chunk-*/file-*.parquet"))
    assert len(files) >= 3 and (root / "data/chunk-001").is_dir()
    assert [str(p.relative_to(root)) for p in files] == sorted(res["files"])
    for path in files:
        schema = pq.read_schema(path)
        assert schema.names == list(features), path  # exactly the declared features, in order
        for key, ft in features.items():
            typ = schema.field(key).type
            if ft["shape"] == [1]:
                assert typ == ARROW[ft["dtype"]], (path, key, typ)
            else:
                assert pa.types.is_fixed_size_list(typ) and typ.list_size == ft["shape"][0], (path, key, typ)
                assert typ.value_type == ARROW[ft["dtype"]], (path, key, typ)

    # episodes metadata: index ranges consistent with the data files
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    for col in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index"):
        assert col in episodes.column_names, col
    rows = episodes.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2, 3]
    assert [r["length"] for r in rows] == LENGTHS
    assert [r["tasks"] for r in rows] == [["synthetic"]] * 4
    assert rows[0]["dataset_from_index"] == 0 and rows[-1]["dataset_to_index"] == sum(LENGTHS)
    assert all(a["dataset_to_index"] == b["dataset_from_index"] for a, b in zip(rows, rows[1:]))
    with DatasetReader(src) as r:
        source = [r.episode(n) for n in r.names]
    seen_files = set()
    for row, ep in zip(rows, source):
        path = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        seen_files.add(path)
        table = pq.read_table(path)
        mine = _column(table, "episode_index") == row["episode_index"]
        assert mine.sum() == row["length"]
        np.testing.assert_array_equal(_column(table, "index")[mine],
                                      np.arange(row["dataset_from_index"], row["dataset_to_index"]))
        np.testing.assert_array_equal(_column(table, "frame_index")[mine], np.arange(row["length"]))
        np.testing.assert_allclose(_column(table, "timestamp")[mine], np.arange(row["length"]) / 50, atol=1e-6)
        np.testing.assert_array_equal(_column(table, "observation.state")[mine], ep.obs["policy"])
        np.testing.assert_array_equal(_column(table, "observation.critic")[mine], ep.obs["critic"])
        np.testing.assert_array_equal(_column(table, "action")[mine], ep.actions)
        np.testing.assert_array_equal(_column(table, "expert_action")[mine], ep.expert_actions)  # NaN rows kept
        np.testing.assert_array_equal(_column(table, "labelled")[mine], np.isfinite(ep.expert_actions).all(-1))
        np.testing.assert_array_equal(_column(table, "next.done")[mine], ep.dones.astype(bool))
        assert row["roboreal/success"] == ep.success
    assert seen_files == set(files)

    # tasks: task_index + the task text as the pandas index LeRobot looks tasks up by
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task_index").to_pylist() == [0] and tasks.column("task").to_pylist() == ["synthetic"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_stats_are_finite_and_match_numpy_over_known_values(exported):
    _, root, _ = exported
    info = json.loads((root / "meta/info.json").read_text())
    stats = json.loads((root / "meta/stats.json").read_text())
    tables = [pq.read_table(p) for p in sorted(root.glob("data/*/*.parquet"))]
    assert set(stats) == set(info["features"])
    for key, ft in info["features"].items():
        values = np.concatenate([_column(t, key) for t in tables]).astype(np.float64).reshape(sum(LENGTHS), -1)
        known = values[np.isfinite(values).all(axis=1)]
        s = stats[key]
        assert set(s) == STATS, key
        assert all(np.isfinite(np.asarray(v, dtype=np.float64)).all() for v in s.values()), key
        assert s["count"] == [len(known)], key
        for name, ref in (("min", known.min(0)), ("max", known.max(0)), ("mean", known.mean(0)),
                          ("std", known.std(0)), ("q01", np.quantile(known, 0.01, axis=0)),
                          ("q50", np.quantile(known, 0.5, axis=0)), ("q99", np.quantile(known, 0.99, axis=0))):
            assert len(s[name]) == ft["shape"][0], (key, name)
            np.testing.assert_allclose(s[name], ref, rtol=1e-6, atol=1e-9, err_msg=f"{key}/{name}")
    # NaN rows (unknown labels, unknown rewards) are left out, not averaged in
    labelled = sum(len(range(0, T, 2)) for T in LENGTHS)
    assert stats["expert_action"]["count"] == [labelled]
    assert stats["policy_action"]["count"] == [LENGTHS[1] + LENGTHS[3]]
    assert stats["next.reward"]["count"] == [sum(LENGTHS) - LENGTHS[2]]
    # per-episode stats: an episode without any policy action has none (null), count 0
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    assert episodes.column("stats/policy_action/count").to_pylist() == [[0], [LENGTHS[1]], [0], [LENGTHS[3]]]
    assert episodes.column("stats/policy_action/mean").to_pylist()[0] is None
    ep1_action = np.concatenate([_column(t, "action")[_column(t, "episode_index") == 1] for t in tables])
    np.testing.assert_allclose(episodes.column("stats/action/mean").to_pylist()[1], ep1_action.mean(0), rtol=1e-6)


def test_round_trip_keeps_observations_actions_labels_and_boundaries(exported, tmp_path):
    src, root, _ = exported
    back = tmp_path / "back.hdf5"
    res = import_lerobot_v3(root, back)
    assert (res["episodes"], res["frames"]) == (4, sum(LENGTHS))
    assert res["obs_groups"] == {"policy": 4, "critic": 6} and res["action_size"] == 2
    with DatasetReader(src) as a, DatasetReader(back) as b:
        assert b.meta["source"] == "lerobot" and b.meta["task"] == "synthetic"
        assert b.meta["control_dt"] == pytest.approx(0.02)
        assert len(a) == len(b) == 4
        for ea, eb in zip(a, b):
            assert len(ea) == len(eb)
            for g in ("policy", "critic"):
                np.testing.assert_array_equal(ea.obs[g], eb.obs[g])
            np.testing.assert_array_equal(ea.actions, eb.actions)
            np.testing.assert_array_equal(ea.expert_actions, eb.expert_actions)  # NaN where unlabelled
            np.testing.assert_array_equal(ea.policy_actions, eb.policy_actions)
            np.testing.assert_array_equal(ea.intervention, eb.intervention)
            np.testing.assert_array_equal(ea.dones, eb.dones)
            np.testing.assert_array_equal(ea.rewards, eb.rewards)  # NaN (unknown) stays NaN
            assert eb.success == ea.success
            assert eb.attrs["lerobot_tasks"] == ["synthetic"] and eb.attrs["source"] == "lerobot"
        assert b.label_counts() == {n: c for n, c in zip(b.names, a.label_counts().values())}


def _hand_built(root) -> dict:
    """A conforming v3.0 directory written the way another tool might: 3 episodes in two data
    files, variable-length list columns, episode rows out of order, several task strings, a
    video feature, a declared feature roboreal does not use, and an undeclared column."""
    rng = np.random.default_rng(1)
    lengths = [4, 6, 5]
    state = [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]
    env_state = [rng.normal(size=(n, 2)).astype(np.float32) for n in lengths]
    action = [rng.normal(size=(n, 2)).astype(np.float32) for n in lengths]
    task_of_episode = [[0], [0, 1], [1]]
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"]},
        "observation.environment_state": {"dtype": "float32", "shape": [2], "names": None},
        "observation.images.top": {"dtype": "video", "shape": [3, 8, 8], "names": ["channels", "height", "width"]},
        "action": {"dtype": "float32", "shape": [2], "names": ["vx", "vy"]},
        "complementary_info.discount": {"dtype": "float32", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None}}
    files = {(0, 0): [0, 1], (0, 1): [2]}
    start, rows = 0, []
    for (chunk, file), eps in files.items():
        cols = {k: [] for k in ("observation.state", "observation.environment_state", "action",
                                "complementary_info.discount", "timestamp", "frame_index", "episode_index", "index",
                                "task_index", "extra_undeclared")}
        for e in eps:
            n = lengths[e]
            order = np.arange(n)[::-1] if e == 1 else np.arange(n)  # rows need not be in frame order
            cols["observation.state"] += state[e][order].tolist()
            cols["observation.environment_state"] += env_state[e][order].tolist()
            cols["action"] += action[e][order].tolist()
            cols["complementary_info.discount"] += [0.99] * n
            cols["timestamp"] += (order / 10.0).tolist()
            cols["frame_index"] += order.tolist()
            cols["episode_index"] += [e] * n
            cols["index"] += (start + order).tolist()
            # episode 1 switches task half way: first half task 0, second half task 1
            cols["task_index"] += [task_of_episode[e][-1] if i >= n // 2 else task_of_episode[e][0] for i in order]
            cols["extra_undeclared"] += ["note"] * n
            rows.append({"episode_index": e, "tasks": [["pick the cube", "place it"][t] for t in task_of_episode[e]],
                         "length": n, "data/chunk_index": chunk, "data/file_index": file,
                         "dataset_from_index": start, "dataset_to_index": start + n,
                         "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            start += n
        table = pa.table({k: pa.array(v, pa.list_(pa.float32())) if k in ("observation.state",
                          "observation.environment_state", "action") else pa.array(v) for k, v in cols.items()})
        for key in ("complementary_info.discount", "timestamp"):  # float32, as the features declare
            table = table.set_column(table.schema.get_field_index(key), key, table.column(key).cast(pa.float32()))
        path = root / DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    info = {"codebase_version": "v3.0", "robot_type": "so100", "total_episodes": 3, "total_frames": sum(lengths),
            "total_tasks": 2, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
            "fps": 10, "splits": {"train": "0:3"}, "data_path": DATA_PATH,
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4", "features": features}
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    pq.write_table(pa.Table.from_pylist([rows[i] for i in (2, 0, 1)]),  # rows out of order
                   root / "meta/episodes/chunk-000/file-000.parquet")
    # pandas' layout for an unnamed index: the task text in __index_level_0__
    tasks = pa.table({"task_index": pa.array([0, 1], pa.int64()), "__index_level_0__": ["pick the cube", "place it"]})
    tasks = tasks.replace_schema_metadata({b"pandas": json.dumps({"index_columns": ["__index_level_0__"]}).encode()})
    pq.write_table(tasks, root / "meta/tasks.parquet")
    return {"lengths": lengths, "state": state, "env_state": env_state, "action": action}


def test_hand_built_conforming_directory_imports_and_trains(tmp_path):
    root = tmp_path / "other"
    ref = _hand_built(root)
    out = tmp_path / "imported.hdf5"
    res = import_lerobot_v3(root, out, task="panda-reach")
    assert res["episodes"] == 3 and res["frames"] == sum(ref["lengths"])
    assert res["obs_groups"] == {"policy": 3, "environment_state": 2}
    assert res["tasks"] == ["pick the cube", "place it"]
    assert {"observation.images.top", "complementary_info.discount", "extra_undeclared"} <= set(res["ignored"])
    with DatasetReader(out) as r:
        assert r.meta["task"] == "panda-reach" and r.meta["source"] == "lerobot"
        assert r.meta["lerobot"]["tasks"] == ["pick the cube", "place it"]
        assert r.meta["lerobot"]["robot_type"] == "so100"
        assert "robot" not in r.meta  # a LeRobot robot_type is not a roboreal robot name
        assert r.meta["control_dt"] == pytest.approx(0.1)
        for e, ep in enumerate(r):
            n = ref["lengths"][e]
            assert len(ep) == n
            np.testing.assert_array_equal(ep.obs["policy"], ref["state"][e])  # frame order restored
            np.testing.assert_array_equal(ep.obs["environment_state"], ref["env_state"][e])
            np.testing.assert_array_equal(ep.actions, ref["action"][e])
            np.testing.assert_array_equal(ep.expert_actions, ref["action"][e])  # demonstrations are labels
            assert np.isnan(ep.rewards).all()  # no reward column: unknown, not 0
            assert ep.dones.tolist() == [0] * (n - 1) + [1]
            assert ep.attrs["lerobot_episode_index"] == e
        assert r.episode(1).attrs["lerobot_tasks"] == ["pick the cube", "place it"]
    _, _, meta = load_transitions(out, val_fraction=0.34, seed=0)
    assert meta["train_labels"] + meta["val_labels"] == sum(ref["lengths"])  # every demonstrated frame trains bc


def test_cli_export_and_import(exported, tmp_path, capsys):
    from roboreal.cli import main

    src, _, _ = exported
    out_dir = tmp_path / "cli_lr"
    assert main(["data", "export", str(src), "--lerobot", str(out_dir)]) == 0
    assert json.loads((out_dir / "meta/info.json").read_text())["codebase_version"] == "v3.0"
    capsys.readouterr()
    assert main(["data", "export", str(src), "--lerobot", str(out_dir)]) == 2  # not empty: refused
    assert "is not empty" in capsys.readouterr().err
    assert main(["data", "export", str(src), "--lerobot", str(out_dir), "--overwrite"]) == 0
    back = tmp_path / "cli_back.hdf5"
    assert main(["data", "import-lerobot", str(out_dir), "--out", str(back), "--task", "synthetic"]) == 0
    assert "4 episodes" in capsys.readouterr().out
    with DatasetReader(back) as r:
        assert len(r) == 4 and r.meta["task"] == "synthetic"
    (out_dir / "meta/info.json").unlink()
    assert main(["data", "import-lerobot", str(out_dir), "--out", str(tmp_path / "x.hdf5")]) == 2
    assert "meta/info.json: missing" in capsys.readouterr().err


def _edit_info(root, **changes) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    for k, v in changes.items():
        info[k] = v
    (root / "meta/info.json").write_text(json.dumps(info))


def test_malformed_directories_raise_errors_naming_file_and_field(exported, tmp_path):
    _, good, _ = exported

    def broken(name: str):
        root = tmp_path / name
        shutil.copytree(good, root)
        return root

    out = tmp_path / "existing.hdf5"  # a refused import must leave the file it would replace untouched
    _roboreal_file(out)
    before = out.read_bytes()
    root = broken("no_info")
    (root / "meta/info.json").unlink()
    with pytest.raises(DatasetError, match=r"meta/info\.json: missing"):
        import_lerobot_v3(root, out)
    root = broken("v21")
    _edit_info(root, codebase_version="v2.1")
    with pytest.raises(DatasetError, match=r"info\.json: codebase_version is 'v2\.1'"):
        import_lerobot_v3(root, out)
    root = broken("no_fps")
    _edit_info(root, fps=None)
    with pytest.raises(DatasetError, match=r"info\.json: field 'fps'"):
        import_lerobot_v3(root, out)
    root = broken("shape")
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["shape"] = [5]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"file-000\.parquet: column 'observation\.state' has \[4\] values per "
                                           r"frame, meta/info\.json features\['observation\.state'\]\.shape is \[5\]"):
        import_lerobot_v3(root, out)
    root = broken("undeclared")
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.extra"] = {"dtype": "float32", "shape": [2], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"file-000\.parquet: no column 'observation\.extra'"):
        import_lerobot_v3(root, out)
    root = broken("no_action")
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["action"]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"info\.json: features has no 'action'"):
        import_lerobot_v3(root, out)
    root = broken("no_tasks")
    (root / "meta/tasks.parquet").unlink()
    with pytest.raises(DatasetError, match=r"meta/tasks\.parquet: missing"):
        import_lerobot_v3(root, out)
    root = broken("no_episodes")
    shutil.rmtree(root / "meta/episodes")
    with pytest.raises(DatasetError, match=r"meta/episodes: missing"):
        import_lerobot_v3(root, out)
    root = broken("length")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_pylist()
    table = table.set_column(table.schema.get_field_index("length"), "length", pa.array([lengths[0] + 1] + lengths[1:]))
    pq.write_table(table, path)
    with pytest.raises(DatasetError, match=r"episode 0 has 5 frames, .*file-000\.parquet says length 6"):
        import_lerobot_v3(root, out)
    root = broken("no_data")
    (root / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000\.parquet: missing"):
        import_lerobot_v3(root, out)
    assert out.read_bytes() == before and list(tmp_path.glob("*.importing")) == []
    with pytest.raises(DatasetError, match="no such LeRobot dataset directory"):
        import_lerobot_v3(tmp_path / "nowhere", out)


def test_export_refusals(tmp_path, monkeypatch):
    src = tmp_path / "demos.hdf5"
    with DatasetWriter(src, {"task": "no-rate"}, fsync=False) as w:  # no control_dt
        w.add_step({"policy": np.zeros(3)}, np.zeros(2), 0.0, True, expert_action=np.zeros(2))
        w.end_episode()
    with pytest.raises(DatasetError, match=r"control_dt.*pass fps"):
        export_lerobot_v3(src, tmp_path / "a")
    with pytest.raises(DatasetError, match=r"no observation group 'critic'"):
        export_lerobot_v3(src, tmp_path / "a", fps=10, obs_group="critic")
    # an episode unlike the first is refused, and the half-written export removed
    with DatasetWriter(src, mode="a", fsync=False) as w:
        w.add_step({"policy": np.zeros(5)}, np.zeros(2), 0.0, True, expert_action=np.zeros(2))
        w.end_episode()
    with pytest.raises(DatasetError, match=r"demo_1 has observation\.state of size 5, the first episode 3"):
        export_lerobot_v3(src, tmp_path / "a", fps=10)
    assert list((tmp_path / "a").iterdir()) == []
    not_a_dataset = tmp_path / "mine"
    not_a_dataset.mkdir()
    (not_a_dataset / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        export_lerobot_v3(src, not_a_dataset, fps=10, overwrite=True)
    assert (not_a_dataset / "notes.txt").read_text() == "keep me"
    # without pyarrow: an error naming the extra, nothing written, no other format instead
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DatasetError, match=r"pip install roboreal\[lerobot\]"):
        export_lerobot_v3(src, tmp_path / "b", fps=10)
    with pytest.raises(DatasetError, match=r"pip install roboreal\[lerobot\]"):
        import_lerobot_v3(tmp_path / "b", tmp_path / "b.hdf5")
    assert not (tmp_path / "b").exists()
