"""The dataset writer's undo journal (`roboreal.data.journal`): a writer that dies at any write
of a commit -- a torn write of HDF5's metadata, or a torn journal record -- leaves a file that
rolls back to its last commit, every finished episode intact.

The writer dies in a forked child (`os._exit`: no clean-up, the kernel keeps what was written,
as after SIGKILL), once for every write its last episode makes, so each moment is tried, not a
random few (`test_imitation`'s kill test is the random version against a real SIGKILL)."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest

from roboreal.data import DatasetError, DatasetReader, DatasetWriter
from roboreal.data import journal as journal_module
from roboreal.data.journal import journal_path

FINISHED = 3
CRASHED = 9  # the child's exit status when it died at the chosen write, during the episode's end_episode
CRASHED_CLOSING = 10  # ... after end_episode returned (closing: the default split, HDF5's close)


def _episode(i: int):
    rng = np.random.default_rng(100 + i)
    T = 4 + i
    return rng.normal(size=(T, 5)).astype(np.float32), rng.uniform(-1, 1, size=(T, 2)).astype(np.float32)


def _write_episode(w: DatasetWriter, i: int) -> None:
    obs, act = _episode(i)
    for t in range(len(act)):
        w.add_step({"policy": obs[t]}, act[t], float(t), t == len(act) - 1)
    w.end_episode(success=bool(i % 2), index=i)


def _check(path, expect: int) -> None:
    with DatasetReader(path) as r:
        assert r.names == [f"demo_{i}" for i in range(expect)] and not r.skipped
        assert r.meta["total"] == sum(len(_episode(i)[1]) for i in range(expect))
        for i, name in enumerate(r.names):
            obs, act = _episode(i)
            ep = r.episode(name)
            np.testing.assert_array_equal(ep.obs["policy"], obs)
            np.testing.assert_array_equal(ep.actions, act)
            assert ep.attrs["index"] == i


def _die_at(path, what: str, k: int) -> int:
    """In a forked child: open `path` to append, write episode FINISHED and die half-way through
    the k-th `what`: "write", a write to the file or the journal header (``os.pwrite``); "record",
    a journal record (``os.write``). Returns the child's exit status (CRASHED, or 0 if the episode
    needed fewer than k)."""
    pid = os.fork()
    if pid == 0:
        try:
            w = DatasetWriter(path, mode="a", fsync=False)
            name = "pwrite" if what == "write" else "write"
            real = getattr(os, name)
            count, ended = [0], [False]

            def torn(fd, data, *at):
                count[0] += 1
                if count[0] == k:
                    data = memoryview(data).cast("B")
                    real(fd, data[:max(1, len(data) // 2)], *at)
                    os._exit(CRASHED_CLOSING if ended[0] else CRASHED)
                return real(fd, data, *at)

            setattr(os, name, torn)  # this child's only: it never returns
            _write_episode(w, FINISHED)
            ended[0] = True
            w.close()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.hdf5"
    with DatasetWriter(path, {"task": "synthetic"}, fsync=False) as w:
        for i in range(FINISHED):
            _write_episode(w, i)
    assert not journal_path(path).exists()  # a clean close leaves no journal
    return path


@pytest.mark.parametrize("what", ["write", "record"])
def test_a_writer_dying_at_any_write_of_an_episode_leaves_every_finished_episode(base, tmp_path, what):
    broken_without_journal = 0
    tried, counts = 0, []
    for k in range(1, 400):
        path = tmp_path / f"{what}{k}.hdf5"
        shutil.copy(base, path)
        status = _die_at(path, what, k)
        assert status in (0, CRASHED, CRASHED_CLOSING), status
        if status == 0:  # the episode needed fewer writes: every one was tried
            _check(path, FINISHED + 1)
            break
        tried += 1
        assert journal_path(path).exists()
        raw = tmp_path / "raw.hdf5"  # the file as the writer left it, before any roll-back
        shutil.copy(path, raw)
        # rolled back to the last commit (the reader applied the journal): the running episode is
        # gone, or there and whole if the writer died after its commit point (the journal emptied)
        with DatasetReader(path) as r:
            done = len(r)
        assert done in (FINISHED, FINISHED + 1) and (status == CRASHED or done == FINISHED + 1), (k, status, done)
        assert not counts or done >= counts[-1], f"the episode came and went again: {counts + [done]}"
        counts.append(done)
        _check(path, done)
        try:
            with h5py.File(raw, "r") as f:
                names = sorted(f["data"])
                for n in names:
                    f["data"][n]["actions"][()]
                if not {f"demo_{i}" for i in range(FINISHED)} <= set(names):  # finished episodes lost
                    broken_without_journal += 1
        except Exception:
            broken_without_journal += 1
        assert not journal_path(path).exists()
        with DatasetWriter(path, mode="a", fsync=False) as w:  # and it can be continued
            _write_episode(w, done)
        _check(path, done + 1)
    else:
        pytest.fail("the episode never finished")
    print(f"{what}: {tried} crash points; without the journal {broken_without_journal} of them lost finished episodes")
    assert tried >= (5 if what == "write" else 2), tried
    if what == "write":
        # the journal was needed: left as they were, some of these files had lost episodes
        assert broken_without_journal >= 1, f"{tried} crash points, none broke the file"


def test_a_live_writers_journal_is_left_alone_by_readers(tmp_path):
    path = tmp_path / "live.hdf5"
    w = DatasetWriter(path, {"task": "synthetic"}, fsync=False)
    try:
        for i in range(2):
            _write_episode(w, i)
        assert journal_path(path).exists()
        _check(path, 2)  # between episodes the file is whole; the reader does not touch the journal
        assert journal_path(path).exists()
        _write_episode(w, 2)
    finally:
        w.close()
    _check(path, 3)
    assert not journal_path(path).exists()


def test_a_journal_a_reader_may_not_apply_is_an_error_that_says_how(base, tmp_path, monkeypatch):
    path = tmp_path / "ro.hdf5"
    shutil.copy(base, path)
    assert _die_at(path, "write", 4) == CRASHED
    real_open = os.open

    def read_only(file, flags, *args):  # the file mode bits do not stop root: refuse writes here
        if str(file) == str(path) and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(journal_module.os, "open", read_only)
    with pytest.raises(DatasetError, match="ro.hdf5-journal, which restores every finished episode"):
        DatasetReader(path)
    monkeypatch.undo()
    _check(path, FINISHED)
