"""Camera frames in datasets (issue 17): HDF5 image groups, transitions, `data info`, LeRobot videos.

An image observation is a (C, H, W) uint8 entry of the obs dict keyed by its camera; the
writer stores it as ``obs/<camera>`` (T, C, H, W) uint8, one gzip chunk per frame, and every
reader gives it back as uint8. Small on purpose: 16x16 synthetic frames, and panda-pick-vision
with 2 envs and 5-step episodes.
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

from roboreal.data import (BatchedRecorder, DatasetError, DatasetReader, DatasetWriter, check_compatible, dataset_meta,
                           load_transitions)

T = 5  # steps per episode (panda-pick-vision at episode_length_s=0.2)


def _frames(seed: int, n: int, shape=(3, 16, 16)) -> np.ndarray:
    """Smooth frames (a moving gradient plus a little noise): what a camera sees, and what H.264 can keep."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    out = np.stack([np.stack([30 + x * 4 * 16 / w + y * 3 * 16 / h + 35 * ch + 5 * t + seed * 7 for ch in range(c)])
                    for t in range(n)]).astype(np.float64)
    return np.clip(out + rng.normal(0, 2, out.shape), 0, 255).astype(np.uint8)


def test_frames_round_trip_bit_exact_as_uint8_one_gzip_chunk_per_frame(tmp_path, capsys):
    path = tmp_path / "cams.hdf5"
    episodes = [_frames(e, T + 1) for e in range(3)]
    with DatasetWriter(path, {"task": "synthetic"}, fsync=False) as w:
        for e, fr in enumerate(episodes):
            for t in range(T):
                w.add_step({"policy": np.full(4, t, np.float32), "cam": torch.from_numpy(fr[t])}, np.zeros(2), 0.0,
                           t == T - 1, expert_action=np.zeros(2))
            w.end_episode(final_obs={"policy": np.zeros(4), "cam": fr[T]} if e != 1 else None)
        with pytest.raises(DatasetError, match=r"obs/cam is a \(C, H, W\) image of dtype float32"):
            w.add_step({"policy": np.zeros(4), "cam": fr[0].astype(np.float32)}, np.zeros(2))
        with pytest.raises(DatasetError, match=r"camera 'cam' gives 3x8x8 frames, .* records it as 3x16x16"):
            w.add_step({"policy": np.zeros(4), "cam": fr[0][:, :8, :8]}, np.zeros(2))
    with h5py.File(path, "r") as f:
        ds = f["data/demo_0/obs/cam"]
        assert (ds.dtype, ds.shape, ds.chunks, ds.compression) == (np.uint8, (T, 3, 16, 16), (1, 3, 16, 16), "gzip")
        assert f["data/demo_0/next_obs/cam"].chunks == (1, 3, 16, 16)
        assert json.loads(f["data"].attrs["image_shapes"]) == {"cam": [3, 16, 16]}
        assert f["data/demo_0/obs/policy"].dtype == np.float32  # vector groups unchanged
    with DatasetReader(path) as r:
        assert r.image_shapes == {"cam": (3, 16, 16)}
        for e, fr in enumerate(episodes):
            ep = r.episode(e)
            assert ep.images == ["cam"] and ep.obs["cam"].dtype == np.uint8
            np.testing.assert_array_equal(ep.obs["cam"], fr[:T])
            # next_obs: the next frame; the last is the final observation, or repeated without one
            last = fr[T:T + 1] if e != 1 else fr[T - 1:T]
            np.testing.assert_array_equal(ep.next_obs["cam"], np.concatenate([fr[1:T], last]))
        assert "cam" not in r.episode(0, next_obs_images=False).next_obs
        assert r.summary()["obs_groups"] == {"policy": 4}
    from roboreal.cli import main

    capsys.readouterr()
    assert main(["data", "info", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cameras: cam 3x16x16 (15 frames, uint8 gzip-1)" in out, out


@pytest.fixture(scope="module")
def vision_recording(tmp_path_factory):
    """panda-pick-vision, 2 envs, 5-step episodes, recorded by a BatchedRecorder; the obs of every
    step kept aside (copies) to compare with."""
    import roboreal

    path = tmp_path_factory.mktemp("vision") / "vision.hdf5"
    env = roboreal.make("panda-pick-vision", num_envs=2, episode_length_s=T * 0.04)
    try:
        obs, _ = env.reset(seed=0)
        seen: list[dict] = []  # per step: {group: (2, ...)} copies of the obs the action was computed from
        gen = torch.Generator().manual_seed(0)
        with DatasetWriter(path, dataset_meta(env, source="sim"), fsync=False) as w:
            rec = BatchedRecorder(w, num_envs=2, max_episodes=4)
            while not rec.done:
                seen.append({k: v.clone() for k, v in obs.items()})
                actions = torch.rand(2, env.spec.action_size, generator=gen) * 2 - 1
                obs, reward, term, trunc, info = env.step(actions)
                rec.record(seen[-1], actions, reward, term, trunc, info, expert_actions=actions)
            shapes = dict(env.spec.image_shapes)
        yield path, seen, shapes, env
    finally:
        env.close()


def test_batched_recorder_stores_both_cameras_aligned_with_the_vector_obs(vision_recording):
    path, seen, shapes, _ = vision_recording
    assert shapes == {"front": (3, 64, 64), "wrist": (3, 64, 64)}
    with DatasetReader(path) as r:
        assert len(r) == 4 and r.image_shapes == shapes
        for n in r.names:
            ep = r.episode(n)
            i = ep.attrs["env_index"]
            assert len(ep) == T and sorted(ep.images) == ["front", "wrist"]
            # which steps of `seen` this episode is: the one whose policy rows match, frames must match too
            start = next(s for s in range(0, len(seen) - T + 1, T) if np.array_equal(
                ep.obs["policy"], np.stack([seen[s + t]["policy"][i].numpy() for t in range(T)])))
            for cam in ("front", "wrist"):
                expected = np.stack([seen[start + t][cam][i].numpy() for t in range(T)])
                assert ep.obs[cam].dtype == np.uint8 and ep.obs[cam].shape == (T, 3, 64, 64)
                np.testing.assert_array_equal(ep.obs[cam], expected)
                np.testing.assert_array_equal(ep.next_obs[cam][:-1], expected[1:])
                assert ep.obs[cam].std() > 1  # a rendered scene, not a blank frame
    train, val, meta = load_transitions(path, val_fraction=0.25)
    assert meta["image_shapes"] == {"front": [3, 64, 64], "wrist": [3, 64, 64]}
    both = type(train).concat([train, val])
    assert both.obs["front"].dtype == torch.uint8 and both.obs["front"].shape == (4 * T, 3, 64, 64)
    assert both.obs["policy"].dtype == torch.float32
    flat = {tuple(s["policy"][i].tolist()): (s["front"][i], s["wrist"][i]) for s in seen for i in range(2)}
    for row in range(len(both)):  # every transition's frames are its own step's
        front, wrist = flat[tuple(both.obs["policy"][row].tolist())]
        assert torch.equal(both.obs["front"][row], front) and torch.equal(both.obs["wrist"][row], wrist)
    sub = both.select_episodes([1])
    assert sub.obs["wrist"].shape == (T, 3, 64, 64) and sub.obs["wrist"].dtype == torch.uint8


def test_check_compatible_refuses_a_camera_of_another_resolution(vision_recording):
    path, _, _, env = vision_recording
    _, _, meta = load_transitions(path, val_fraction=0.0)
    check_compatible(meta, env, "policy", image_inputs=("front", "wrist"))  # recorded on this env: fine
    small = dict(meta, image_shapes={**meta["image_shapes"], "wrist": [3, 32, 32]})
    with pytest.raises(DatasetError, match=r"camera 'wrist' has 3x32x32 frames, task panda-pick-vision renders "
                                           r"3x64x64"):
        check_compatible(small, env, "policy")
    with pytest.raises(DatasetError, match=r"reads camera 'top', which the dataset and task panda-pick-vision lack"):
        check_compatible(meta, env, "policy", image_inputs=("front", "top"))


def test_lerobot_export_writes_mp4_videos_and_import_decodes_them(vision_recording, tmp_path):
    import pyarrow.parquet as pq

    from roboreal.data.lerobot import export_lerobot_v3, import_lerobot_v3

    path, *_ = vision_recording
    res = export_lerobot_v3(path, tmp_path / "lr")
    assert res["videos"] == [f"videos/observation.images.{c}/chunk-000/file-000.mp4" for c in ("front", "wrist")]
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    ft = info["features"]["observation.images.front"]
    assert (ft["dtype"], ft["shape"], ft["names"]) == ("video", [64, 64, 3], ["height", "width", "channels"])
    assert ft["info"]["video.fps"] == info["fps"] == 25 and ft["info"]["video.codec"] == "h264"
    data = pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
    assert not any("images" in c for c in data.column_names)  # frames live in the videos only
    episodes = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["videos/observation.images.wrist/from_timestamp"] for e in episodes] == [k * T / 25 for k in range(4)]
    stats = json.loads((tmp_path / "lr/meta/stats.json").read_text())["observation.images.front"]
    assert np.array(stats["mean"]).shape == (3, 1, 1) and stats["count"] == [4 * T]
    assert 0 <= np.array(stats["min"]).min() < np.array(stats["mean"]).min() < np.array(stats["max"]).max() <= 1

    back = import_lerobot_v3(tmp_path / "lr", tmp_path / "back.hdf5")
    assert back["images"] == {"front": [3, 64, 64], "wrist": [3, 64, 64]} and back["ignored"] == []
    diffs, shifted = [], []
    with DatasetReader(path) as a, DatasetReader(tmp_path / "back.hdf5") as b:
        assert b.image_shapes == a.image_shapes
        for n in a.names:
            for cam in ("front", "wrist"):
                x, y = a.episode(n).obs[cam].astype(np.int16), b.episode(n).obs[cam]
                assert y.dtype == np.uint8 and y.shape == x.shape
                diffs.append(np.abs(x - y).mean())
                shifted.append(np.abs(x[1:] - y[:-1]).mean())
    print(f"H.264 round trip: mean abs difference {np.mean(diffs):.2f} of 255 (max per episode {max(diffs):.2f}); "
          f"against the next frame {np.mean(shifted):.2f}")
    assert max(diffs) < 8  # lossy codec, and the task's pixel noise (sigma 3) does not survive it
    assert np.mean(diffs) < np.mean(shifted)  # each frame decodes into its own step


def test_an_rgb_depth_camera_exports_as_two_videos_and_imports_as_one_camera(tmp_path):
    from roboreal.data.lerobot import export_lerobot_v3, import_lerobot_v3

    src = tmp_path / "rgbd.hdf5"
    episodes = [_frames(e, 6, (4, 16, 16)) for e in range(2)]
    with DatasetWriter(src, {"task": "synthetic", "control_dt": 0.1}, fsync=False) as w:
        for fr in episodes:
            for t in range(6):
                w.add_step({"policy": np.full(2, t, np.float32), "cam": fr[t]}, np.zeros(2), 0.0, t == 5,
                           expert_action=np.zeros(2))
            w.end_episode()
    export_lerobot_v3(src, tmp_path / "lr")
    features = json.loads((tmp_path / "lr/meta/info.json").read_text())["features"]
    rgb, depth = features["observation.images.cam"], features["observation.images.cam_depth"]
    assert (rgb["shape"], rgb["info"]["video.is_depth_map"]) == ([16, 16, 3], False)
    assert (depth["shape"], depth["info"]["video.is_depth_map"]) == ([16, 16, 1], True)
    res = import_lerobot_v3(tmp_path / "lr", tmp_path / "back.hdf5")
    assert res["images"] == {"cam": [4, 16, 16]}
    with DatasetReader(tmp_path / "back.hdf5") as r:
        for fr, ep in zip(episodes, r):
            diff = np.abs(ep.obs["cam"].astype(np.int16) - fr[:6]).mean(axis=(0, 2, 3))  # per channel
            print(f"RGB-D round trip, {ep.name}: mean abs difference per channel {np.round(diff, 2).tolist()}")
            assert ep.obs["cam"].shape == (6, 4, 16, 16) and (diff < 8).all(), diff


KILLED_WRITER = r'''
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_data_images import _frames
from roboreal.data import DatasetWriter
w = DatasetWriter(sys.argv[1], {"task": "synthetic", "source": "robot"}, fsync=True)
i = 0
while True:
    fr = _frames(i, 4)
    for t in range(4):
        w.add_step({"policy": np.full(3, i, np.float32), "cam": fr[t]}, np.zeros(2), done=t == 3)
    w.end_episode(index=i)
    if i == 0:
        print("STARTED", flush=True)
    i += 1
    time.sleep(0.02)
'''


def test_a_writer_killed_while_recording_frames_leaves_every_finished_episode_intact(tmp_path):
    path = tmp_path / "killed.hdf5"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), os.path.dirname(__file__)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "STARTED"
        time.sleep(0.6)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with DatasetReader(path) as r:
        assert not r.skipped and len(r) >= 2, (r.skipped, len(r))
        assert r.names == [f"demo_{i}" for i in range(len(r))]
        for i, n in enumerate(r.names):
            np.testing.assert_array_equal(r.episode(n).obs["cam"], _frames(i, 4))
    with DatasetWriter(path, mode="a", fsync=False) as w:  # reopened after the kill: appending goes on
        assert w.next_index == len(r) and w.image_shapes == {"cam": (3, 16, 16)}
    assert re.fullmatch(r"demo_\d+", r.names[-1])
