"""Camera frames on disk: how fast and how large, for the storage schemes an HDF5 writer can use.

Frames: panda-pick-vision's two 64x64 cameras under the scripted expert (4 envs, 50 steps), with
the task's pixel noise and without it. Each scheme writes every episode's ``obs`` and
``next_obs`` (next_obs[t] = obs[t + 1]) as (T, 3, 64, 64) uint8, one frame per chunk:

- `DatasetWriter` (what roboreal records with): gzip level 1, each frame compressed once and
  written as a raw chunk into obs and next_obs;
- h5py's lzf filter and h5py's gzip 4 filter, compressing obs and next_obs apiece.

Printed: recorded frames/s (one obs frame with its next_obs copy; best of `--repeats`) and
stored bytes per frame (raw: 12,288). Usage:

    MUJOCO_GL=egl python benchmarks/dataset_images.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import roboreal  # noqa: E402
from roboreal.agents.experts import ScriptedPandaExpert  # noqa: E402
from roboreal.data import DatasetWriter  # noqa: E402


def record_frames(noise: bool, steps: int = 50, num_envs: int = 4) -> list[dict[str, np.ndarray]]:
    """Per env, one episode's frames: {camera: (steps, 3, 64, 64) uint8}."""
    kw = {} if noise else {"randomization": {"camera": {"noise": 0.0}}}
    env = roboreal.make("panda-pick-vision", num_envs=num_envs, episode_length_s=10.0, **kw)
    try:
        obs, _ = env.reset(seed=0)
        expert = ScriptedPandaExpert(env)
        frames = {c: [] for c in env.spec.image_shapes}
        for _ in range(steps):
            obs, *_ = env.step(expert.act(obs, env))
            for c in frames:
                frames[c].append(obs[c].numpy())
        return [{c: np.stack(v)[:, i] for c, v in frames.items()} for i in range(num_envs)]
    finally:
        env.close()


def write_with_writer(path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    with DatasetWriter(path, fsync=False) as w:
        for ep in episodes:
            for t in range(len(next(iter(ep.values())))):
                w.add_step({c: v[t] for c, v in ep.items()}, np.zeros(8))
            w.end_episode()


def write_with_h5py_filter(path: Path, episodes: list[dict[str, np.ndarray]], compression: str, opts=None) -> None:
    with h5py.File(path, "w") as f:
        for k, ep in enumerate(episodes):
            for c, x in ep.items():
                for sub, d in (("obs", x), ("next_obs", np.concatenate([x[1:], x[-1:]]))):
                    f.create_dataset(f"demo_{k}/{sub}/{c}", data=d, chunks=(1, *x.shape[1:]), compression=compression,
                                     compression_opts=opts)


def stored_bytes(path: Path) -> int:
    total = 0

    def visit(_, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset) and obj.dtype == np.uint8 and obj.ndim == 4 and "/obs/" in obj.name:
            total += obj.id.get_storage_size()
    with h5py.File(path) as f:
        f.visititems(visit)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    schemes = {"DatasetWriter (gzip 1, compressed once)": write_with_writer,
               "h5py lzf (obs, next_obs apiece)": lambda p, e: write_with_h5py_filter(p, e, "lzf"),
               "h5py gzip 4 (obs, next_obs apiece)": lambda p, e: write_with_h5py_filter(p, e, "gzip", 4)}
    with tempfile.TemporaryDirectory() as tmp:
        for noise in (True, False):
            episodes = record_frames(noise)
            frames = sum(v.shape[0] for ep in episodes for v in ep.values())
            print(f"\n{'with' if noise else 'without'} the task's pixel noise: {frames} frames "
                  f"({len(episodes)} episodes x {len(episodes[0])} cameras)")
            for name, write in schemes.items():
                path = Path(tmp) / "frames.hdf5"
                best = float("inf")
                for _ in range(args.repeats):
                    path.unlink(missing_ok=True)
                    start = time.perf_counter()
                    write(path, episodes)
                    best = min(best, time.perf_counter() - start)
                print(f"  {name:42s} {frames / best:8,.0f} frames/s  {stored_bytes(path) / frames:8,.0f} B/frame")


if __name__ == "__main__":
    main()
