"""An MCAP file writer that leaves a readable file however the writing process ends, and
`recover_mcap` for a file cut at an arbitrary byte. Pure Python (the `mcap` package; no ROS):
the ROS 2 conventions on top of it are in `ros2_bag.py`.

**Killed between commits** (SIGKILL, the OOM killer, a crash): `McapFileWriter` leaves a
complete MCAP after every commit, not only at the end: each commit is one ``pwrite`` of the
new records followed by a provisional end (an empty Data End, a Footer without a summary,
the magic) that the next commit overwrites. Schemas, channels and metadata are committed when
added, outside chunks, before any chunk holding their messages; a chunk (256 KiB at most) is
committed with its message indexes at each `McapFileWriter.flush`. A killed writer's MCAP
(killed anywhere but inside a commit's ``pwrite``) thus reads whole, with no repair step, in
`mcap.stream_reader.StreamReader` (it stops at the provisional footer, no error),
`mcap.reader.make_reader` (seeking: the footer has no summary, so it reads the file
linearly; non-seeking: the same), rosbags 0.11 (`AnyReader` / `rosbag2.Reader` on the
.mcap: its reader needs the end magic and the footer, and scans the data section when the
footer has no summary; it then needs the log times in file order, which reception times are
unless the clock steps back) and, by its source (not run here: no rosbag2 on this machine),
rosbag2's reader, which scans a file whose footer has no summary. Tools that want the index
(``mcap info``) find none until `recover_mcap` (below) or `McapFileWriter.finish` writes it.

**Cut at an arbitrary byte** instead (a kill inside a ``pwrite``, a power loss before the
page cache reached the disk, a partial copy): the file has no end. Streaming readers read it
up to the last complete chunk and then raise at the tear (`mcap.exceptions.EndOfFile` or
`struct.error`): iterate `StreamReader(...).records`, or ``make_reader`` on a non-seekable
stream with ``iter_messages(log_time_order=False)`` (the default time order sorts the whole
file first, so it raises before yielding anything), and stop at the error. Readers that start
from the footer refuse it before any message: the seeking ``make_reader`` (it parses the last
37 bytes as a footer: `RecordLengthLimitExceeded`, `EndOfFile`, ...), rosbags ("File end
magic is invalid"), rosbag2. For those, `recover_mcap` (``roboreal record --recover
FILE.mcap``) rewrites it as a complete, indexed file keeping every message before the tear,
the source's library (``... (recovered by roboreal recover_mcap)``), its metadata records and
channel metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from roboreal.config import ConfigError

MCAP_MAGIC = b"\x89MCAP0\r\n"
MCAP_CHUNK_SIZE = 256 * 1024  # a chunk ends here or at the next flush, whichever comes first


def _compressor(compression: str) -> tuple[str, Callable[[bytes], bytes]]:
    """(the chunk's compression field, the function) for ``zstd | lz4 | none``."""
    if compression == "zstd":
        import zstandard

        return "zstd", zstandard.compress
    if compression == "lz4":
        import lz4.frame

        return "lz4", lz4.frame.compress
    if compression == "none":
        return "", bytes
    raise ConfigError("mcap_compression", f"expected zstd, lz4 or none, got {compression!r}")


class McapFileWriter:
    """An MCAP file that is a valid, readable MCAP after every write, not only after `finish`.

    Records go to the file in whole commits (one ``pwrite`` each): the records since the last
    commit, then a provisional end (an empty Data End, a Footer with no summary, the closing
    magic) that the next commit overwrites. A process killed between commits leaves a
    complete unindexed MCAP: mcap's streaming and seeking readers read it to its last chunk
    without an error, rosbags scans it (and rosbag2's reader, by its source). Schemas and channels are written outside
    chunks and before the first chunk holding a message of theirs; a chunk is closed (and
    committed with its message indexes) at `chunk_size` bytes and at each `flush`. `finish`
    replaces the provisional end with the summary (schemas, channels, statistics, chunk and
    metadata indexes, summary offsets) and the real footer.

    A file cut at an arbitrary byte instead (a kill inside a commit's ``pwrite``, a power
    loss before the data reached the disk, a partial copy) has no end: streaming readers
    still read every complete chunk before the cut and then raise; readers that start from
    the footer need `recover_mcap`."""

    def __init__(self, path: str | Path, *, profile: str, library: str, compression: str = "zstd",
                 chunk_size: int = MCAP_CHUNK_SIZE):
        from mcap.data_stream import RecordBuilder
        from mcap.records import DataEnd, Footer, Header

        self._RecordBuilder = RecordBuilder
        self.compression, self._compress = _compressor(compression)
        self.chunk_size = int(chunk_size)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # never overwrite a recording
        end = RecordBuilder()
        DataEnd(data_section_crc=0).write(end)
        Footer(summary_start=0, summary_offset_start=0, summary_crc=0).write(end)
        self._provisional_end = end.end() + MCAP_MAGIC
        self._committed = 0  # file bytes that stay (everything before the provisional end)
        self._pending = RecordBuilder()  # whole data-section records not yet committed
        self._chunk = RecordBuilder()  # the open chunk's records (uncompressed)
        self._chunk_messages: dict[int, list[tuple[int, int]]] = {}  # channel -> [(log time, offset in chunk)]
        self._chunk_times: list[int] = []  # [first, last] log time in the open chunk
        self.schemas: dict[int, Any] = {}
        self.channels: dict[int, Any] = {}
        self.chunk_indexes: list = []
        self.metadata_indexes: list = []
        self.channel_message_counts: dict[int, int] = {}
        self.message_count = 0
        self.message_start_time: int | None = None
        self.message_end_time: int | None = None
        self.finished = False
        self._pending.write(MCAP_MAGIC)
        Header(profile=profile, library=library).write(self._pending)
        self._commit()

    @property
    def _offset(self) -> int:
        """The file offset of the next record written to the data section."""
        return self._committed + self._pending.count

    def _commit(self) -> None:
        data = self._pending.end()
        if not data:
            return
        self._write_at(data + self._provisional_end, self._committed)
        self._committed += len(data)

    def _write_at(self, data: bytes, at: int) -> int:
        """`data` at file offset `at`; returns the offset after it."""
        while data:  # a regular file takes it in one call; loop for the rare short write
            n = os.pwrite(self._fd, data, at)
            data, at = data[n:], at + n
        return at

    def register_schema(self, name: str, encoding: str, data: bytes) -> int:
        from mcap.records import Schema

        schema = Schema(id=len(self.schemas) + 1, name=name, encoding=encoding, data=bytes(data))
        self.schemas[schema.id] = schema
        schema.write(self._pending)  # committed with its channel
        return schema.id

    def register_channel(self, topic: str, message_encoding: str, schema_id: int,
                         metadata: dict[str, str] | None = None) -> int:
        from mcap.records import Channel

        if schema_id and schema_id not in self.schemas:
            raise ValueError(f"channel {topic!r}: no schema with id {schema_id}")
        channel = Channel(id=len(self.channels) + 1, topic=topic, message_encoding=message_encoding,
                          schema_id=schema_id, metadata=dict(metadata or {}))
        self.channels[channel.id] = channel
        self.channel_message_counts[channel.id] = 0
        channel.write(self._pending)
        self._commit()  # on disk before any chunk holding its messages (the open chunk is written later)
        return channel.id

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        from mcap.records import Metadata, MetadataIndex

        start = self._offset
        Metadata(name=name, metadata={str(k): str(v) for k, v in data.items()}).write(self._pending)
        self.metadata_indexes.append(MetadataIndex(offset=start, length=self._offset - start, name=name))
        self._commit()

    def add_message(self, channel_id: int, log_time: int, data: bytes, publish_time: int, sequence: int = 0) -> None:
        from mcap.records import Message

        if channel_id not in self.channels:
            raise KeyError(f"no MCAP channel with id {channel_id}")
        self._chunk_messages.setdefault(channel_id, []).append((log_time, self._chunk.count))
        Message(channel_id=channel_id, log_time=log_time, publish_time=publish_time, sequence=sequence,
                data=bytes(data)).write(self._chunk)
        self._chunk_times = [min(self._chunk_times[0], log_time), max(self._chunk_times[1], log_time)] \
            if self._chunk_times else [log_time, log_time]
        self.channel_message_counts[channel_id] += 1
        self.message_count += 1
        self.message_start_time = log_time if self.message_start_time is None else min(self.message_start_time,
                                                                                       log_time)
        self.message_end_time = log_time if self.message_end_time is None else max(self.message_end_time, log_time)
        if self._chunk.count >= self.chunk_size:
            self._close_chunk()
            self._commit()

    def _close_chunk(self) -> None:
        """The open chunk and its message indexes into the pending records."""
        import zlib

        from mcap.records import Chunk, ChunkIndex, MessageIndex

        if not self._chunk_messages:
            return
        raw = self._chunk.end()
        compressed = self._compress(raw)
        start = self._offset
        Chunk(compression=self.compression, data=compressed, message_start_time=self._chunk_times[0],
              message_end_time=self._chunk_times[1], uncompressed_crc=zlib.crc32(raw),
              uncompressed_size=len(raw)).write(self._pending)
        chunk_end = self._offset
        index_offsets = {}
        for channel_id, entries in self._chunk_messages.items():
            index_offsets[channel_id] = self._offset
            MessageIndex(channel_id=channel_id, records=entries).write(self._pending)
        self.chunk_indexes.append(ChunkIndex(
            message_start_time=self._chunk_times[0], message_end_time=self._chunk_times[1], chunk_start_offset=start,
            chunk_length=chunk_end - start, message_index_offsets=index_offsets,
            message_index_length=self._offset - chunk_end, compression=self.compression,
            compressed_size=len(compressed), uncompressed_size=len(raw)))
        self._chunk_messages, self._chunk_times = {}, []

    def flush(self, fsync: bool = False) -> None:
        """Close the open chunk and commit: everything so far is on disk (in the OS's hands;
        `fsync`: on the device) as a complete MCAP."""
        if self.finished:
            return
        self._close_chunk()
        self._commit()
        if fsync:
            os.fsync(self._fd)

    def finish(self) -> None:
        """Write the summary and footer (an indexed, complete MCAP), fsync and close."""
        import struct
        import zlib

        from mcap.opcode import Opcode
        from mcap.records import DataEnd, Footer, Statistics, SummaryOffset

        if self.finished:
            return
        self._close_chunk()
        DataEnd(data_section_crc=0).write(self._pending)
        summary_start = self._offset
        summary = self._RecordBuilder()
        offsets = []
        statistics = Statistics(
            message_count=self.message_count, schema_count=len(self.schemas), channel_count=len(self.channels),
            attachment_count=0, metadata_count=len(self.metadata_indexes), chunk_count=len(self.chunk_indexes),
            message_start_time=self.message_start_time or 0, message_end_time=self.message_end_time or 0,
            channel_message_counts=dict(self.channel_message_counts))
        for opcode, records in ((Opcode.SCHEMA, self.schemas.values()), (Opcode.CHANNEL, self.channels.values()),
                                (Opcode.STATISTICS, [statistics]), (Opcode.CHUNK_INDEX, self.chunk_indexes),
                                (Opcode.METADATA_INDEX, self.metadata_indexes)):
            group_start = summary.count
            for record in records:
                record.write(summary)
            if summary.count > group_start:
                offsets.append(SummaryOffset(group_opcode=opcode, group_start=summary_start + group_start,
                                             group_length=summary.count - group_start))
        summary_offset_start = summary_start + summary.count
        for offset in offsets:
            offset.write(summary)
        summary_bytes = summary.end()
        # the footer's CRC covers the summary and the footer's own fields before the CRC
        crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start, summary_offset_start),
                         zlib.crc32(summary_bytes))
        self._pending.write(summary_bytes)
        Footer(summary_start=summary_start, summary_offset_start=summary_offset_start, summary_crc=crc) \
            .write(self._pending)
        self._pending.write(MCAP_MAGIC)
        at = self._write_at(self._pending.end(), self._committed)
        os.ftruncate(self._fd, at)  # the final end is never shorter than the provisional one; be sure
        os.fsync(self._fd)
        os.close(self._fd)
        self._committed = at
        self.finished = True



def recover_mcap(src: str | Path, dst: str | Path) -> dict:
    """Rewrite an MCAP as a complete, indexed file `dst`: every message before a tear (a file
    cut at an arbitrary byte) or before the provisional end of a killed recording is kept,
    with the source's profile, its library (``<library> (recovered by roboreal recover_mcap)``),
    its metadata records, schemas and channels (channel metadata included).

    Returns ``{"messages", "channels", "complete", "tear"}``: complete: the source was a
    finished file (it had a summary); tear: why reading stopped early (None: it did not).
    Raises ValueError naming `src` if it is not an MCAP file (or was cut inside its header)."""
    from mcap.exceptions import InvalidMagic
    from mcap.records import Channel, Footer, Header, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader

    src, dst = Path(src), Path(dst)
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    messages, complete, tear = 0, False, None
    w: McapFileWriter | None = None
    with open(src, "rb") as fin:
        records = StreamReader(fin, validate_crcs=True).records
        while True:
            try:
                rec = next(records)
            except StopIteration:
                break
            except InvalidMagic as e:
                raise ValueError(f"{src} is not an MCAP file ({e})") from None
            except Exception as e:  # noqa: BLE001  the tear: a record cut short (EndOfFile, struct.error),
                # a torn or corrupt chunk (CRC, zstd/lz4 error); every record before it has been copied
                tear = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                break
            if isinstance(rec, Header):
                library = f"{rec.library} (recovered by roboreal recover_mcap)" if rec.library else \
                    "roboreal recover_mcap"
                w = McapFileWriter(dst, profile=rec.profile, library=library)
            elif w is None:
                raise ValueError(f"{src}: the first record is {type(rec).__name__}, not the MCAP header")
            elif isinstance(rec, Schema) and rec.id not in schema_ids:
                schema_ids[rec.id] = w.register_schema(rec.name, rec.encoding, rec.data)
            elif isinstance(rec, Channel) and rec.id not in channel_ids:
                if rec.schema_id in schema_ids or rec.schema_id == 0:
                    channel_ids[rec.id] = w.register_channel(rec.topic, rec.message_encoding,
                                                             schema_ids.get(rec.schema_id, 0), rec.metadata)
            elif isinstance(rec, Message) and rec.channel_id in channel_ids:
                w.add_message(channel_ids[rec.channel_id], rec.log_time, rec.data, rec.publish_time, rec.sequence)
                messages += 1
            elif isinstance(rec, Metadata):
                w.add_metadata(rec.name, rec.metadata)
            elif isinstance(rec, Footer):
                complete = rec.summary_start != 0  # a killed recording's provisional footer has no summary
    if w is None:
        raise ValueError(f"{src} is not a readable MCAP file: it ends before its header ({tear})")
    w.finish()
    return {"messages": messages, "channels": len(channel_ids), "complete": complete, "tear": tear}

