"""Kill campaign: `DatasetWriter` SIGKILLed at random moments, and what its file holds afterwards.

A writer process appends episodes as fast as it can (small vector episodes, or with a 64x64
camera: `--images`); after a random 0.05-0.6 s it gets SIGKILL. Per kill the file is judged
twice: as the writer left it (a copy opened with plain h5py: every finished episode must
be there and readable), and after roboreal's reader applied the undo journal
(`roboreal.data.journal`; every finished episode must be there, readable and exactly as
written). The first count is what the file would have lost without the journal; the second
must be 0. `tests/test_dataset_journal.py` tries every write of one episode instead (bounded,
deterministic); `tests/test_imitation.py` kills three times.

    python benchmarks/writer_kills.py --kills 200
    python benchmarks/writer_kills.py --kills 100 --images
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from roboreal.data import DatasetReader
from roboreal.data.journal import journal_path

WRITER = r'''
import sys
import numpy as np
from roboreal.data import DatasetWriter
path, images = sys.argv[1], sys.argv[2] == "1"
w = DatasetWriter(path, {"task": "synthetic"}, fsync=False)
i = 0
while True:
    rng = np.random.default_rng(i)
    T = 5 + i % 7
    for t in range(T):
        obs = {"policy": rng.normal(size=6).astype(np.float32)}
        if images:
            obs["camera"] = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
        w.add_step(obs, np.full(2, i + t / 100, np.float32), float(t), t == T - 1)
    w.end_episode(index=i)
    if i == 0:
        print("STARTED", flush=True)
    i += 1
'''


def expected(i: int, images: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    T = 5 + i % 7
    policy, camera = [], []
    for t in range(T):
        policy.append(rng.normal(size=6).astype(np.float32))
        if images:
            camera.append(rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8))
    out = {"policy": np.stack(policy), "actions": np.stack([np.full(2, i + t / 100, np.float32) for t in range(T)])}
    if images:
        out["camera"] = np.stack(camera)
    return out


def raw_intact(path: Path) -> int | None:
    """Finished episodes in the file as left (plain h5py, no roll-back); None if the file is unreadable."""
    try:
        with h5py.File(path, "r") as f:
            names = [n for n in f["data"]]
            for n in names:
                f["data"][n]["actions"][()]
            return len(names)
    except Exception:
        return None


def recovered_intact(path: Path, images: bool) -> int:
    """Episodes after the reader's roll-back, each checked value by value (raises on any damage)."""
    with DatasetReader(path) as r:
        assert not r.skipped, r.skipped
        assert r.names == [f"demo_{i}" for i in range(len(r))], r.names
        for i, name in enumerate(r.names):
            ep, want = r.episode(name), expected(i, images)
            np.testing.assert_array_equal(ep.obs["policy"], want["policy"])
            np.testing.assert_array_equal(ep.actions, want["actions"])
            if images:
                np.testing.assert_array_equal(ep.obs["camera"], want["camera"])
        return len(r)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--images", action="store_true", help="each step also carries a 3x64x64 camera frame")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    lost_raw = lost = rolled_back = 0
    finished = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.kills):
            path = Path(tmp) / f"kill{k}.hdf5"
            proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "1" if args.images else "0"],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "STARTED"
                time.sleep(float(rng.uniform(0.05, 0.6)))
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
            raw = Path(tmp) / "raw.hdf5"
            shutil.copy(path, raw)
            had_journal_records = journal_path(path).exists() and journal_path(path).stat().st_size > 16
            try:
                n = recovered_intact(path, args.images)
            except Exception as e:  # noqa: BLE001 -- any failure to read back is a loss, reported
                print(f"kill {k}: LOST after roll-back: {type(e).__name__}: {e}")
                lost += 1
                continue
            finished.append(n)
            rolled_back += had_journal_records
            left = raw_intact(raw)
            if left is None or left < n:
                lost_raw += 1
                print(f"kill {k}: the file as left {'is unreadable' if left is None else f'has {left} of {n} episodes'}"
                      f"; after the roll-back all {n} are intact")
            path.unlink()
            raw.unlink()
    print(f"{args.kills} SIGKILLs at random moments ({'with 64x64 camera frames' if args.images else 'vector episodes'}"
          f", {time.perf_counter() - t0:.0f} s): finished episodes per kill median {int(np.median(finished or [0]))}")
    print(f"  files that lost finished episodes as left (no roll-back): {lost_raw}")
    print(f"  kills inside a commit (journal records to undo): {rolled_back}")
    print(f"  files that lost finished episodes after roboreal's roll-back: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
