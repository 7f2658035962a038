"""An undo journal under `DatasetWriter`'s HDF5 file, so that a writer killed at any moment
(SIGKILL included) leaves a file that rolls back to its last commit: every finished episode
readable.

Why: HDF5 updates its metadata in place and not atomically. Linking an episode into ``data``
rewrites that group's index (B-tree and symbol-table nodes, in address order), and a kill
between two of those writes leaves an index that points at a node never written: h5py then
cannot read the group at all, and every episode in the file is lost (seen about once in ten
CI runs of the kill test; HDF5's own journaling was never released, and h5py exposes no
setting that makes the splits rare).

How: HDF5 does its I/O through `JournaledFile` (h5py's ``fileobj`` driver). The file's size
at the last commit (a completed flush) is the *committed size*. A write over bytes below it
first appends a record of the bytes it replaces to ``<file>-journal`` (offset, old bytes,
CRC-32); writes past it need no record (a roll-back truncates them away). `commit` (after
HDF5 has flushed) empties the journal and records the new committed size. A writer that dies
leaves its journal: `recover` (called by the next `DatasetWriter` and by `DatasetReader`
before they open the file) writes the recorded bytes back, newest first, truncates the file to
the committed size and deletes the journal. A record is complete in the journal before its
overwrite starts, and a torn last record (killed while writing it) is ignored: its overwrite
never began. `recover` leaves a file alone while its writer lives: the writer holds an fcntl
lock on the file from before its first write (`lock_for_writing`), taken by nobody else.

Cost: one small record per metadata overwrite (a few per episode); episode data are appended.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

from roboreal.data.hdf5_format import DatasetError

JOURNAL_SUFFIX = "-journal"
_MAGIC = b"RRJ1"
_HEADER = struct.Struct("<4sQI")  # magic, committed size, CRC-32 of the two
_RECORD = struct.Struct("<QII")  # offset, length, CRC-32 of offset, length and the old bytes


_WRITING: set[Path] = set()  # the files a `JournaledFile` of this process has open


def journal_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _header_crc(size: int) -> int:
    return zlib.crc32(_MAGIC + size.to_bytes(8, "little"))


def _record_crc(offset: int, old: bytes) -> int:
    return zlib.crc32(old, zlib.crc32(struct.pack("<QI", offset, len(old))))


def _header(size: int) -> bytes:
    return _HEADER.pack(_MAGIC, size, _header_crc(size))


def _record(offset: int, old: bytes) -> bytes:
    return _RECORD.pack(offset, len(old), _record_crc(offset, old)) + old


def _read_journal(path: Path) -> tuple[int | None, list[tuple[int, bytes]]]:
    """(committed size, [(offset, old bytes)] in write order); (None, []) if there is no valid header."""
    raw = path.read_bytes()
    if len(raw) < _HEADER.size:
        return None, []
    magic, size, crc = _HEADER.unpack_from(raw)
    if magic != _MAGIC or crc != _header_crc(size):
        return None, []
    records, pos = [], _HEADER.size
    while pos + _RECORD.size <= len(raw):
        offset, length, crc = _RECORD.unpack_from(raw, pos)
        old = raw[pos + _RECORD.size:pos + _RECORD.size + length]
        if len(old) != length or crc != _record_crc(offset, old):
            break  # torn: killed while writing this record, before its overwrite began
        records.append((offset, old))
        pos += _RECORD.size + length
    return size, records


def roll_back(path: str | Path, fd: int) -> bool:
    """Restore `path` (open read-write as `fd`) to its last commit from its journal, then delete
    the journal. Returns whether anything was restored. The caller holds the writer's lock.
    (`fd`, not a descriptor of its own: closing another descriptor of the file would drop a
    plain POSIX lock.)"""
    path, journal = Path(path), journal_path(path)
    if not journal.exists():
        return False
    size, records = _read_journal(journal)
    changed = False
    if size is not None and (records or os.fstat(fd).st_size != size):
        for offset, old in reversed(records):  # newest first: the oldest record holds the committed bytes
            os.pwrite(fd, old, offset)
        os.ftruncate(fd, size)
        os.fsync(fd)
        changed = True
    journal.unlink()  # after the file is whole again: a roll-back killed midway is simply redone
    return changed


def lock_for_writing(fd: int, path: Path) -> bool:
    """An exclusive fcntl lock on the open file `fd`, so a second writer is refused while
    HDF5's own (flock) lock stays off for readers: Linux keeps the two kinds apart, and
    readers take no fcntl lock. An open-file-description lock where there is one (a plain
    POSIX lock would be dropped when this process closes any other descriptor of the file, as
    HDF5 does when a reader opens it here). The kernel drops it when the writer dies. Returns
    False where files cannot be locked (then nothing is guarded); raises `DatasetError` when
    another writer holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        if hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("P") == 8:  # struct flock of 64-bit Linux
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise DatasetError(f"{path}: another DatasetWriter is writing this dataset (it holds the file's "
                               f"write lock); readers may open it, a second writer may not") from None
        return False
    return True


def recover(path: str | Path) -> bool:
    """Before reading `path`: if a writer died there mid-commit (its journal is left and nobody
    holds its lock), roll the file back to that writer's last commit. Returns whether it did.
    A live writer's file is left alone; a journal the caller may not apply (no write access)
    is a `DatasetError` that says how to apply it."""
    path = Path(path)
    journal = journal_path(path)
    if not journal.exists() or path.resolve() in _WRITING:  # a writer of this process (its lock may be a POSIX one)
        return False
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:
        raise DatasetError(f"{path}: its writer was killed mid-commit and left {journal.name}, which restores "
                           f"every finished episode; open the dataset once with write access to apply it") from None
    try:
        try:
            lock_for_writing(fd, path)
        except DatasetError:
            return False  # a writer is recording: the journal is its own
        return roll_back(path, fd)
    finally:
        os.close(fd)  # drops the lock


class JournaledFile:
    """The dataset file as HDF5 sees it (h5py's ``fileobj`` driver): `write` journals the bytes
    it replaces below the committed size first; `commit` makes the current file the restore
    point. `mode`: ``"w"`` create or truncate, ``"a"`` open an existing file, ``"x"`` create a
    new one. `fsync`: make journal records and commits durable (power loss), not only kill-safe."""

    def __init__(self, path: str | Path, mode: str, fsync: bool = True):
        if mode not in ("w", "a", "x"):
            raise ValueError(f"mode must be 'w', 'a' or 'x', not {mode!r}")
        self.path, self.fsync = Path(path), fsync
        self.fd = os.open(self.path, os.O_RDWR | {"w": os.O_CREAT, "a": 0, "x": os.O_CREAT | os.O_EXCL}[mode], 0o644)
        self.journal_fd = -1
        try:
            # the writer's lock before anything changes (a file another writer holds is left alone)
            lock_for_writing(self.fd, self.path)
        except DatasetError:
            os.close(self.fd)
            raise
        if mode == "a":
            roll_back(self.path, self.fd)  # a writer killed mid-commit left its journal: back to its last commit
        else:
            os.ftruncate(self.fd, 0)
        _WRITING.add(self.path.resolve())
        self.pos = 0
        self.journal_fd = os.open(journal_path(self.path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.committed = 0
        self.commit()

    # --- the file-like interface h5py's fileobj driver uses ---
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.pos = offset
        elif whence == os.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = os.fstat(self.fd).st_size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self.fd, len(view), self.pos)
        view[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(0, os.fstat(self.fd).st_size - self.pos)
        data = os.pread(self.fd, size, self.pos)
        self.pos += len(data)
        return data

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        end = self.pos + len(data)
        if self.pos < self.committed:  # replaces committed bytes: keep them first
            self._keep(self.pos, min(end, self.committed))
        done = 0
        while done < len(data):  # a regular file takes it all at once; a signal could cut it short
            done += os.pwrite(self.fd, data[done:], self.pos + done)
        self.pos = end
        return done

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if size < self.committed:
            self._keep(size, self.committed)
        os.ftruncate(self.fd, size)
        return size

    def flush(self) -> None:
        pass  # unbuffered: every write is already the kernel's

    # --- commits ---
    def _keep(self, start: int, stop: int) -> None:
        old = os.pread(self.fd, stop - start, start)
        os.write(self.journal_fd, _record(start, old))
        if self.fsync:
            os.fsync(self.journal_fd)

    def commit(self) -> None:
        """The file as it is now (HDF5 flushed) is the restore point: the journal is emptied."""
        if self.fsync:
            os.fsync(self.fd)
        size = os.fstat(self.fd).st_size
        # emptied, then the new header: a kill in between leaves no valid header, so nothing is undone
        # (right: the file is already whole at `size`)
        os.ftruncate(self.journal_fd, 0)
        os.pwrite(self.journal_fd, _header(size), 0)
        os.lseek(self.journal_fd, _HEADER.size, os.SEEK_SET)
        if self.fsync:
            os.fsync(self.journal_fd)
        self.committed = size

    def close(self) -> None:
        """Close the file (dropping the lock) and delete the journal. Anything written since the
        last `commit` is rolled back first (a writer closed on an error mid-episode)."""
        if self.fd < 0:
            return
        uncommitted = os.fstat(self.journal_fd).st_size > _HEADER.size or os.fstat(self.fd).st_size != self.committed
        os.close(self.journal_fd)
        if uncommitted:
            roll_back(self.path, self.fd)
        journal_path(self.path).unlink(missing_ok=True)
        _WRITING.discard(self.path.resolve())
        os.close(self.fd)
        self.fd = self.journal_fd = -1
