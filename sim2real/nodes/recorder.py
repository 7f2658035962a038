"""The demonstration recorder (`roboreal record --out FILE.hdf5`): a robot session into data
DAgger retrains on, and into MCAP that ROS 2 tooling reads.

    policy node ~/step ──> episodes ──> FILE.hdf5   (roboreal dataset: `roboreal dagger --dataset`)
    policy node ~/info ──> provenance
    raw topics ─────────────────────> FILE.mcap    (ROS 2 CDR, msgdef schemas, QoS: a rosbag2 bag)

**Where the data comes from.** The policy node publishes, every control step in which the
policy ran, one ``~/step`` message holding the observation the policy saw, the policy's
action, the action fed to the safety chain, the chain's output mapped back to the action
space, the intervention flags, the chain's mode, a step counter, a stamp and its reset
count (`step_record.py`); and once, latched, ``~/info`` (robot, bundle checksums, control
period, observation layout, its topic names). One message per step, so observation and
actions pair *exactly*; nothing is re-derived from sensor topics here.

**Per step, in the dataset** (`roboreal.data` layout, ``source="robot"``):

    obs/<group>      the observation vector the policy ran on (group: the bundle's, ``policy``)
    actions          the *applied* action: the safety chain's output in the normalized action
                     space (what the robot was told to do, after every filter)
    policy_actions   the policy's own action (also while the human drives)
    expert_actions   the human's action where it was fed to the chain in the chain's policy
                     mode (HG-DAgger: labels only at takeovers); NaN elsewhere
    intervention     1 while the human had control (``/intervention`` true). A takeover step
                     with a stale teleop stream (the chain held) is an intervention without a label
    rewards, dones   NaN (unknown on a robot, never 0); dones 1 at each episode's last step

**Episodes.** An episode starts at the first step in the chain's ``policy`` mode (the startup
ramp is not recorded) and ends, and is written whole, when
  * the policy node's ``~/reset`` is called (its ``reset_count`` changes),
  * the chain faults (``damping``/``estop``): the steps until the reset are not recorded
    (a ``hold`` stays in the episode, unlabelled: a stale goal's hold and an arm's latched
    fault hold look alike in the mode; the latter ends the episode at its ``~/reset``),
  * a step is missing (the policy did not run, e.g. no goal, or the node restarted),
  * no step arrived for ``step_timeout`` s (the policy node stopped or died),
  * it reached ``max_episode_s``,
  * ``~/end_episode`` (std_srvs/Trigger) is called; ``~/discard_episode`` drops it instead;
    ``~/set_success`` (std_srvs/SetBool) marks it a success/failure (stored as ``success`` with
    ``success_source="operator"``; without it success is unknown: no ``success`` attribute),
  * the recorder is stopped (SIGINT/SIGTERM): the running episode is written, the MCAP finished.
Each episode's attributes say why it ended (``ended_by``), its chain modes (run-length),
steps, stamps, reset count and the bundle's manifest checksum.

**Killed at any moment** (SIGKILL, the OOM killer, a crash): the dataset loses at most the
episode in progress. Episodes are written by `DatasetWriter`, whole, into an unreachable
group, flushed and fsynced, then linked: every finished episode is readable, the file is
valid and ``--append`` continues it. The MCAP (`McapFileWriter`) is a complete MCAP after
every commit, not only at the end: each commit is one ``pwrite`` of the new records followed
by a provisional end (an empty Data End, a Footer without a summary, the magic) that the next
commit overwrites. Schemas, channels and metadata are committed when added, outside chunks,
before any chunk holding their messages; a chunk (256 KiB at most) is committed with its
message indexes every ``mcap_flush_period`` s and before each episode goes to the dataset, so
every finished episode's ``~/step`` messages are in the MCAP too. A killed recorder's MCAP
(killed anywhere but inside a commit's ``pwrite``) thus reads whole, with no repair step, in
`mcap.stream_reader.StreamReader` (it stops at the provisional footer, no error),
`mcap.reader.make_reader` (seeking: the footer has no summary, so it reads the file
linearly; non-seeking: the same), rosbags 0.11 (`AnyReader` / `rosbag2.Reader` on the
.mcap: its reader needs the end magic and the footer, and scans the data section when the
footer has no summary; it then needs the log times in file order, which reception times are
unless the clock steps back) and, by its source (not run here: no rosbag2 on this machine),
rosbag2's reader, which scans a file whose footer has no summary. Tools that want the index
(``mcap info``) find none until `recover_mcap` (below) or a clean stop writes it.
At most the last ``mcap_flush_period`` s of raw messages are lost (committed data is in the
OS's hands; the MCAP is fsynced at each episode end, the dataset at every write).
A file cut at an arbitrary byte instead (a kill inside a ``pwrite``, a power loss before the
page cache reached the disk, a partial copy) has no end. Streaming readers read it up to the
last complete chunk and then raise at the tear (`mcap.exceptions.EndOfFile` or
`struct.error`): iterate `StreamReader(...).records`, or ``make_reader`` on a non-seekable
stream with ``iter_messages(log_time_order=False)`` (the default time order sorts the whole
file first, so it raises before yielding anything), and stop at the error. Readers that start
from the footer refuse it before any message: the seeking ``make_reader`` (it parses the last
37 bytes as a footer: `RecordLengthLimitExceeded`, `EndOfFile`, ...), rosbags ("File end
magic is invalid"), rosbag2. For those,
`recover_mcap` (``roboreal record --recover FILE.mcap``) rewrites it as a complete, indexed
file keeping every message before the tear, the source's library (``... (recovered by
roboreal recover_mcap)``), its metadata records and channel metadata.

**MCAP topics**: every topic the policy node names in ``~/info`` (joint states, IMU, cmd_vel,
goal, object pose, joint and gripper commands, ``/intervention``, ``/teleop/action``, its
e-stop, ``~/policy_action``, ``~/executed_action``, ``~/mode``, ``~/step``, ``~/info``,
``/diagnostics``) plus ``extra_topics`` (default ``/joy``). As rosbag2 does, a topic is
subscribed once a publisher for it appears (type and QoS from the ROS graph: best effort
if any publisher is, transient local if all are); messages are stored as received (CDR),
with their ``ros2msg`` schemas (the .msg definitions, dependencies concatenated), log time
= reception, publish time = the publisher's source timestamp. ``profile`` is ``ros2``. As in
a rosbag2 MCAP (metadata version 9, Jazzy and later), each channel carries
``offered_qos_profiles`` (a YAML list, one entry per publisher as the graph reported it:
history, depth, reliability, durability, deadline, lifespan, liveliness,
liveliness_lease_duration as sec/nsec, avoid_ros_namespace_conventions; policies by name,
e.g. ``transient_local``), which ``ros2 bag play`` offers again (a latched topic replays
latched; rosbag2's behaviour by its source, not run here), and
``topic_type_hash`` (``RIHS01_...``); a ``rosbag2`` metadata record holds
``serialized_metadata`` (the bag's metadata YAML: version, storage ``mcap``, ``ros_distro``
from ``$ROS_DISTRO``, topics with their QoS and counts; plus ``ROS_DISTRO`` when known), at
the start, so that a killed recording has it, and again with the counts at the end.
``roboreal.policy_node_info`` holds the policy node's ``~/info``. rosbags decodes the QoS;
it ignores metadata records (a bare .mcap has no ``ros_distro`` there).

Parameters: `PARAMETERS` (defaults: this file, then ``config/recorder.yaml``, then params
files / -p overrides; ``--out`` etc. are shortcuts).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from roboreal.config import ConfigError
from roboreal.sim2real.nodes.params import config_file, default_parameters
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.step_record import MODES, StepFormatError, info_json, parse_info, step_from_msg

NODE_NAME = "recorder"
STEP_TYPE = "std_msgs/msg/Float64MultiArray"  # the policy node's ~/step

PARAMETERS: dict[str, tuple[Any, str]] = {
    "out": ("", "dataset file (.hdf5) the episodes are written to"),
    "append": (False, "add episodes to an existing dataset (false: an existing file is refused)"),
    "mcap": ("auto", "MCAP file of the raw topics (auto: OUT with .mcap; none: no MCAP)"),
    "policy_node": ("/policy_node", "the policy node whose ~/step and ~/info are recorded"),
    "extra_topics": (["/joy"], "topics recorded into the MCAP besides the policy node's (types from the graph)"),
    "max_episode_s": (60.0, "s after which the running episode is ended and written (0: no limit)"),
    "step_timeout": (1.0, "s without a step after which the running episode is ended"),
    "mcap_flush_period": (1.0, "s between MCAP flushes: a kill loses at most this much raw data"),
    "mcap_compression": ("zstd", "zstd | lz4 | none"),
    "discovery_period": (0.5, "s between looks at the ROS graph for topics to record"),
    "progress_period": (5.0, "s between progress log lines"),
}


def mcap_path_for(out: str | Path, mcap: str, append: bool) -> Path | None:
    """Where the MCAP goes: ``auto`` = OUT with .mcap (appending: the first free OUT_N.mcap)."""
    if str(mcap).lower() in ("none", "false", "off", "no"):
        return None
    if str(mcap) not in ("", "auto"):
        return Path(mcap)
    out = Path(out)
    path = out.with_suffix(".mcap")
    n = 1
    while append and path.exists():  # an MCAP is written once: a continued session gets its own file
        path = out.with_name(f"{out.stem}_{n}.mcap")
        n += 1
    return path


# ----------------------------------------------------------------------------------------
# Message definitions (ros2msg schemas)
# ----------------------------------------------------------------------------------------
PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64", "string", "wstring"}
_IDL_TO_MSG = {"double": "float64", "float": "float32", "boolean": "bool", "octet": "byte", "long double": "float64"}


def _share_roots(pkg: str) -> list[Path]:
    roots = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots.append(Path(sys.prefix) / "share")  # pip-installed ROS wheels put share/ in the environment
    try:
        here = Path(importlib.import_module(pkg).__file__).resolve()
        roots += [p / "share" for p in here.parents[1:6]]
    except (ImportError, TypeError):
        pass
    return roots


def _msg_text(type_name: str) -> str:
    """The .msg text of ``pkg/msg/Name`` (the installed file, or one built by introspection)."""
    pkg, _, name = type_name.split("/")
    for root in _share_roots(pkg):
        f = root / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            return f.read_text()
    return _introspected_msg(pkg, name)


def _msg_type(t: str) -> str:
    """An IDL-ish type of `get_fields_and_field_types` as a .msg type."""
    m = re.fullmatch(r"sequence<(.+?)(?:,\s*(\d+))?>", t)
    if m:
        return f"{_msg_type(m.group(1))}[{'<=' + m.group(2) if m.group(2) else ''}]"
    m = re.fullmatch(r"(.+)\[(\d+)\]", t)
    if m:
        return f"{_msg_type(m.group(1))}[{m.group(2)}]"
    return _IDL_TO_MSG.get(t, t)


def _introspected_msg(pkg: str, name: str) -> str:
    """A .msg definition from the Python message class (fields only; no constants or comments),
    for when the .msg file is not installed."""
    cls = getattr(importlib.import_module(f"{pkg}.msg"), name)
    return "\n".join(f"{_msg_type(t)} {f}" for f, t in cls.get_fields_and_field_types().items()) + "\n"


def _dependencies(text: str, pkg: str) -> list[str]:
    deps = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        tokens = line.split()
        if len(tokens) < 2:
            continue
        base = re.sub(r"\[.*\]$", "", tokens[0]).split("<=")[0]
        if base in PRIMITIVES:
            continue
        parts = base.split("/")
        dep = f"{parts[0]}/msg/{parts[-1]}" if len(parts) > 1 else f"{pkg}/msg/{base}"
        if dep not in deps:
            deps.append(dep)
    return deps


def message_definition(type_name: str) -> str:
    """The ``ros2msg`` schema of ``pkg/msg/Name``: its .msg text, then every dependency's,
    each after a line of 80 '=' and ``MSG: pkg/msg/Name`` (rosbag2's encoding)."""
    if type_name.count("/") != 2:
        raise ValueError(f"{type_name!r} is not a message type name (pkg/msg/Name)")
    top = _msg_text(type_name)
    parts, seen = [top.rstrip("\n")], {type_name}
    queue = _dependencies(top, type_name.split("/")[0])
    while queue:
        dep = queue.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        text = _msg_text(dep)
        parts.append("=" * 80 + f"\nMSG: {dep}\n" + text.rstrip("\n"))
        queue += _dependencies(text, dep.split("/")[0])
    return "\n".join(parts) + "\n"


def message_class(type_name: str):
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


# ----------------------------------------------------------------------------------------
# MCAP
# ----------------------------------------------------------------------------------------
MCAP_MAGIC = b"\x89MCAP0\r\n"
MCAP_CHUNK_SIZE = 256 * 1024  # a chunk ends here or at the next flush, whichever comes first
ROSBAG2_METADATA_VERSION = 9  # rosbag2's BagMetadata version since Jazzy (QoS enums as names)


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
        blob, at = data + self._provisional_end, self._committed
        while blob:  # a regular file takes it in one call; loop for the rare short write
            n = os.pwrite(self._fd, blob, at)
            blob, at = blob[n:], at + n
        self._committed += len(data)

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
        data = self._pending.end()
        at = self._committed
        while data:
            n = os.pwrite(self._fd, data, at)
            data, at = data[n:], at + n
        os.ftruncate(self._fd, at)  # the final end is never shorter than the provisional one; be sure
        os.fsync(self._fd)
        os.close(self._fd)
        self._committed = at
        self.finished = True


def qos_profile_dict(profile: Any) -> dict:
    """A publisher's QoS (an rclpy `QoSProfile`, e.g. from ``get_publishers_info_by_topic``) as
    one entry of rosbag2's ``offered_qos_profiles`` (metadata version 9: policies by name,
    durations as sec/nsec; an infinite duration is 9223372036 s 854775807 ns)."""
    def policy(kind: str) -> str:
        names = _QOS_POLICY_NAMES[kind]
        value = int(getattr(profile, kind))
        return names[value] if 0 <= value < len(names) else "unknown"

    def duration(kind: str) -> dict:
        value = getattr(profile, kind)
        ns = int(getattr(value, "nanoseconds", value))
        return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}

    return {"history": policy("history"), "depth": int(profile.depth), "reliability": policy("reliability"),
            "durability": policy("durability"), "deadline": duration("deadline"), "lifespan": duration("lifespan"),
            "liveliness": policy("liveliness"), "liveliness_lease_duration": duration("liveliness_lease_duration"),
            "avoid_ros_namespace_conventions": bool(profile.avoid_ros_namespace_conventions)}


# rmw's enum values, in order, named as rmw's *_policy_to_str names them
_QOS_POLICY_NAMES = {
    "history": ("system_default", "keep_last", "keep_all", "unknown"),
    "reliability": ("system_default", "reliable", "best_effort", "unknown", "best_available"),
    "durability": ("system_default", "transient_local", "volatile", "unknown", "best_available"),
    "liveliness": ("system_default", "automatic", "manual_by_node", "manual_by_topic", "unknown", "best_available"),
}


def offered_qos_profiles_yaml(profiles: list[dict]) -> str:
    """The ``offered_qos_profiles`` channel metadata: a YAML list of `qos_profile_dict` entries."""
    import yaml

    return yaml.safe_dump(list(profiles), sort_keys=False, default_flow_style=False)


class McapTopicWriter:
    """Serialized ROS 2 messages into an MCAP that ROS 2 bag tooling treats as a bag.

    Profile ``ros2``, ``cdr`` messages, ``ros2msg`` schemas; each channel carries rosbag2's
    ``offered_qos_profiles`` (the publishers' QoS) and ``topic_type_hash``; a ``rosbag2``
    metadata record (``serialized_metadata``: the bag's metadata in rosbag2's YAML, version 9,
    with ``ros_distro``; plus ``ROS_DISTRO`` when known) is written at the start, so that a
    killed recording has it, and again with the message counts at `finish`. Written through
    `McapFileWriter`: the file is a readable MCAP after every flush."""

    def __init__(self, path: str | Path, compression: str = "zstd", chunk_size: int = MCAP_CHUNK_SIZE,
                 ros_distro: str | None = None):
        import roboreal

        self.file = McapFileWriter(path, profile="ros2", library=f"roboreal-recorder/{roboreal.__version__}",
                                   compression=compression, chunk_size=chunk_size)
        self.path = self.file.path
        self.ros_distro = os.environ.get("ROS_DISTRO", "") if ros_distro is None else ros_distro
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.topics: dict[str, dict] = {}  # topic -> rosbag2's topic_metadata
        self.messages = 0
        self.file.add_metadata("rosbag2", self._rosbag2_record())

    @property
    def finished(self) -> bool:
        return self.file.finished

    def add_topic(self, topic: str, type_name: str, qos_profiles: list[dict] | None = None, type_hash: str = "",
                  metadata: dict[str, str] | None = None) -> int:
        """The channel of `topic` (registered once): `qos_profiles` are the publishers' offers
        (`qos_profile_dict`), `type_hash` their ``RIHS01_...`` type hash."""
        if topic in self.channels:
            return self.channels[topic]
        if type_name not in self.schemas:
            self.schemas[type_name] = self.file.register_schema(type_name, "ros2msg",
                                                                message_definition(type_name).encode())
        profiles = list(qos_profiles or [])
        if not all(isinstance(q, dict) for q in profiles):
            raise TypeError(f"{topic}: qos_profiles must be a list of qos_profile_dict() entries, got {qos_profiles!r}")
        channel_meta = {"offered_qos_profiles": offered_qos_profiles_yaml(profiles), "topic_type_hash": type_hash or "",
                        **(metadata or {})}
        cid = self.file.register_channel(topic, "cdr", self.schemas[type_name], channel_meta)
        self.channels[topic] = cid
        self.counts[topic] = 0
        self.topics[topic] = {"name": topic, "type": type_name, "serialization_format": "cdr",
                              "offered_qos_profiles": profiles, "type_description_hash": type_hash or ""}
        return cid

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        self.counts[topic] += 1
        self.messages += 1
        # sequence: the per-channel count (uint32), as rosbag2 leaves it when unknown
        self.file.add_message(self.channels[topic], log_time_ns, bytes(data),
                              publish_time_ns if publish_time_ns else log_time_ns,
                              sequence=self.counts[topic] & 0xFFFFFFFF)

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self.file.add_metadata(name, {k: str(v) for k, v in data.items()})

    def flush(self, fsync: bool = False) -> None:
        """End the chunk in progress and hand everything to the OS (a kill loses none of it)."""
        self.file.flush(fsync)

    def finish(self) -> None:
        """The final ``rosbag2`` metadata record, then the summary and footer; closes the file."""
        if self.finished:
            return
        self.file.add_metadata("rosbag2", self._rosbag2_record())
        self.file.finish()

    def bag_metadata(self) -> dict:
        """rosbag2's BagMetadata of the file so far (what ``ros2 bag info`` shows; the content
        of a bag directory's metadata.yaml under ``rosbag2_bagfile_information``)."""
        f = self.file
        start = f.message_start_time or 0
        duration = (f.message_end_time - start) if f.message_count else 0
        times = {"starting_time": {"nanoseconds_since_epoch": start}, "duration": {"nanoseconds": duration}}
        return {"version": ROSBAG2_METADATA_VERSION, "storage_identifier": "mcap",
                "relative_file_paths": [self.path.name], **times, "message_count": f.message_count,
                "topics_with_message_count": [{"topic_metadata": meta, "message_count": self.counts[topic]}
                                              for topic, meta in self.topics.items()],
                "compression_format": "", "compression_mode": "",  # chunk compression is the storage's own
                "files": [{"path": self.path.name, **times, "message_count": f.message_count}],
                "custom_data": {}, "ros_distro": self.ros_distro}

    def _rosbag2_record(self) -> dict[str, str]:
        import yaml

        record = {"serialized_metadata": yaml.safe_dump(self.bag_metadata(), sort_keys=False)}
        if self.ros_distro:
            record["ROS_DISTRO"] = self.ros_distro  # rosbag2 before metadata version 8 reads it here
        return record


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


# ----------------------------------------------------------------------------------------
# Episodes (no ROS: unit-testable)
# ----------------------------------------------------------------------------------------
class EpisodeBuilder:
    """Turns ``~/step`` records into dataset episodes (see the module docstring for the rules).

    `open_writer(info)` returns the `DatasetWriter` for the first session info; `before_write()`
    runs before an episode goes to the dataset (the node flushes the MCAP there, so every
    episode the dataset holds is in the MCAP too)."""

    def __init__(self, open_writer: Callable[[dict], Any], max_episode_steps: int = 0,
                 before_write: Callable[[], None] | None = None, log: Callable[[str], None] | None = None):
        self.open_writer = open_writer
        self.max_episode_steps = int(max_episode_steps)
        self.before_write = before_write or (lambda: None)
        self.log = log or (lambda msg: None)
        self.writer = None
        self.info: dict | None = None
        self.refusing: str | None = None  # why steps are not recorded (an incompatible session)
        self.steps: list[dict] = []
        self.success: bool | None = None
        self.last_step: int | None = None
        self.last_reset: int | None = None
        self.last_time: float | None = None
        self.written = {"episodes": 0, "steps": 0, "labels": 0, "interventions": 0}
        self.dropped = {"before_info": 0, "refused": 0, "outside_episodes": 0}
        self.ended: list[dict] = []  # per ended episode: name, steps, labels, interventions, ended_by

    @property
    def running(self) -> bool:
        return bool(self.steps)

    # ----- session -----
    def set_info(self, info: dict) -> None:
        if self.info is not None and info == self.info:
            return
        if self.running:
            self.end("the policy node's session changed (restarted or another bundle)")
        if self.writer is None:
            self.writer = self.open_writer(info)
        problem = self._incompatible(info)
        self.refusing = problem
        if problem:
            self.log(f"ERROR: not recording this session: {problem}")
        self.info = info
        self.last_step = self.last_reset = None

    def _incompatible(self, info: dict) -> str | None:
        meta = {k: self.writer.data.attrs.get(k) for k in ("robot", "action_size", "obs_groups")}
        try:  # DatasetWriter stores dicts as JSON strings
            groups = json.loads(meta["obs_groups"]) if meta["obs_groups"] is not None else {}
        except (TypeError, ValueError):
            groups = {}
        group = info.get("obs_group", "policy")
        if meta["robot"] is not None and str(meta["robot"]) != info["robot"]:
            return f"the dataset holds robot {meta['robot']!r}, the policy node runs {info['robot']!r}"
        if meta["action_size"] is not None and int(meta["action_size"]) != int(info["action_size"]):
            return f"the dataset's actions have size {meta['action_size']}, the policy's {info['action_size']}"
        if isinstance(groups, dict) and group in groups and int(groups[group]) != int(info["obs_size"]):
            return f"the dataset's obs/{group} has size {groups[group]}, the policy's observation {info['obs_size']}"
        return None

    # ----- steps -----
    def on_step(self, f: dict, now: float) -> None:
        if self.info is None:
            self.dropped["before_info"] += 1
            return
        if self.refusing:
            self.dropped["refused"] += 1
            return
        step, reset = int(f["step"]), int(f["reset_count"])
        mode_i = int(f["mode"])
        mode = MODES[mode_i] if 0 <= mode_i < len(MODES) else f"mode {mode_i}"
        if len(f["observation"]) != int(self.info["obs_size"]) or \
                len(f["policy_action"]) != int(self.info["action_size"]):
            self.dropped["refused"] += 1
            self.log(f"ERROR: step {step}: sizes differ from ~/info (obs {len(f['observation'])}, "
                     f"action {len(f['policy_action'])})")
            return
        if self.running:
            if reset != self.last_reset:
                self.end(f"reset (the policy node's ~/reset, reset_count {reset})")
            elif self.last_step is not None and step != self.last_step + 1:
                self.end(f"gap: steps {self.last_step + 1}..{step - 1} missing (the policy did not run, or "
                         "messages were lost)")
        self.last_step, self.last_reset, self.last_time = step, reset, now
        if mode in ("damping", "estop"):
            if self.running:
                self.end(f"fault: the safety chain went to {mode}")
            self.dropped["outside_episodes"] += 1
            return
        if not self.running and mode != "policy":
            self.dropped["outside_episodes"] += 1  # the startup ramp, or a hold before the policy drives
            return
        self.steps.append({**f, "mode_name": mode})
        if self.max_episode_steps and len(self.steps) >= self.max_episode_steps:
            self.end(f"max length ({self.max_episode_steps} steps)")

    def check_timeout(self, now: float, timeout: float) -> None:
        if self.running and self.last_time is not None and now - self.last_time > timeout:
            self.end(f"no step for {now - self.last_time:.1f} s (the policy stopped running)")

    def set_success(self, success: bool) -> bool:
        if not self.running:
            return False
        self.success = bool(success)
        return True

    def discard(self) -> int:
        n = len(self.steps)
        self.steps, self.success = [], None
        return n

    def end(self, reason: str) -> str | None:
        """Write the running episode whole; returns its name (None if nothing was running)."""
        steps, success = self.steps, self.success
        self.steps, self.success = [], None
        if not steps:
            return None
        self.before_write()
        w, info = self.writer, self.info
        group = info.get("obs_group", "policy")
        labels = interventions = 0
        modes: list[list] = []
        for i, f in enumerate(steps):
            human = bool(f["human_action"]) and f["mode_name"] == "policy"
            labels += human
            interventions += bool(f["intervention"])
            if modes and modes[-1][0] == f["mode_name"]:
                modes[-1][1] += 1
            else:
                modes.append([f["mode_name"], 1])
            w.add_step({group: f["observation"]}, f["applied_action"], float("nan"), i == len(steps) - 1,
                       expert_action=f["commanded_action"] if human else None, policy_action=f["policy_action"],
                       intervention=bool(f["intervention"]))
        bundle = info.get("bundle") or {}
        name = w.end_episode(success=success, success_source="operator" if success is not None else None,
                             source="robot", ended_by=reason, modes=modes,
                             first_step=int(steps[0]["step"]), last_step=int(steps[-1]["step"]),
                             start_stamp=float(steps[0]["stamp"]), end_stamp=float(steps[-1]["stamp"]),
                             reset_count=int(steps[0]["reset_count"]), policy_node=info.get("node"),
                             bundle_manifest_sha256=bundle.get("manifest_sha256"), bundle_path=bundle.get("path"),
                             labels=labels, interventions=interventions)
        self.written["episodes"] += 1
        self.written["steps"] += len(steps)
        self.written["labels"] += labels
        self.written["interventions"] += interventions
        row = {"name": name, "steps": len(steps), "labels": labels, "interventions": interventions,
               "ended_by": reason, "success": success}
        self.ended.append(row)
        self.log(f"wrote {name}: {len(steps)} steps, {interventions} intervention steps, {labels} labels "
                 f"(ended: {reason})")
        return name


def dataset_meta_from_info(info: dict, mcap: Path | None) -> dict:
    """File attributes of a robot recording: provenance from the policy node's ~/info."""
    from roboreal.data import dataset_meta

    training = info.get("training") or {}
    group = info.get("obs_group", "policy")
    bundle = dict(info.get("bundle") or {})
    bundle.update(task=training.get("task"), algo=training.get("algo"), run_dir=training.get("run_dir"),
                  step=training.get("step"))
    return dataset_meta(
        task=training.get("task"), env_overrides=training.get("env_overrides") or {}, source="robot",
        expert={"kind": "human", "via": (info.get("topics") or {}).get("teleop_action")}, bundle=bundle,
        robot=info["robot"], robot_spec_checksum=info.get("robot_spec_checksum"), control_dt=float(info["control_dt"]),
        action_size=int(info["action_size"]), obs_groups={group: int(info["obs_size"])},
        observation_layout={group: info.get("observation_layout")}, joints=info.get("joints"),
        policy_node=info.get("node"), command_interface=info.get("command_interface"),
        safety_limits=info.get("safety_limits"), mcap=str(mcap) if mcap else None, recorder="roboreal record")


# ----------------------------------------------------------------------------------------
# The node
# ----------------------------------------------------------------------------------------
def make_node(**kwargs):
    """The recorder node (its class is built here so that importing this module needs no rclpy)."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import SetBool, Trigger

    from roboreal.data import DatasetError, DatasetWriter

    class Recorder(Node):
        def __init__(self):
            super().__init__(NODE_NAME, **kwargs)
            dyn = dict(dynamic_typing=True)
            defaults = default_parameters(NODE_NAME)
            unknown = sorted(set(defaults) - set(PARAMETERS))
            if unknown:
                raise ConfigError(unknown[0], f"unknown recorder parameter in {config_file(NODE_NAME)}")
            p = {k: self.declare_parameter(k, defaults.get(k, d), ParameterDescriptor(description=desc, **dyn)).value
                 for k, (d, desc) in PARAMETERS.items()}
            self.out = Path(str(p["out"] or ""))
            if not str(p["out"] or ""):
                raise ConfigError("out", "not set: pass --out FILE.hdf5 or --ros-args -p out:=FILE.hdf5")
            self.append = str(p["append"]).lower() in ("true", "1")
            if self.out.exists() and not self.append:
                raise ConfigError("out", f"{self.out} exists: pass --append to add episodes to it, or choose "
                                         "another file (a recording is never overwritten)")
            floats = {}
            for k in ("max_episode_s", "step_timeout", "mcap_flush_period", "discovery_period", "progress_period"):
                try:
                    floats[k] = float(p[k])
                except (TypeError, ValueError):
                    raise ConfigError(k, f"expected a number, got {p[k]!r}") from None
                if floats[k] < 0 or (k != "max_episode_s" and floats[k] == 0):
                    raise ConfigError(k, f"must be positive, got {floats[k]}")
            self.p = floats
            self.policy_node = "/" + str(p["policy_node"]).strip("/")
            self.extra_topics = [self.resolve_topic_name(str(t)) for t in (p["extra_topics"] or []) if str(t)]
            self.mcap_path = mcap_path_for(self.out, str(p["mcap"]), self.append)
            if self.mcap_path is not None and self.mcap_path.exists():
                raise ConfigError("mcap", f"{self.mcap_path} exists (an MCAP recording is never overwritten)")
            self.mcap = McapTopicWriter(self.mcap_path, str(p["mcap_compression"])) if self.mcap_path else None
            self.episodes = EpisodeBuilder(self._open_writer, before_write=self._flush_mcap,
                                           log=self._log_episode)
            self.writer = None
            self.fatal: str | None = None
            self.info: dict | None = None
            self.subscribed: dict[str, str] = {}  # topic -> type, MCAP subscriptions
            self.stats = {"steps": 0, "bad_steps": 0}

            self.step_topic = f"{self.policy_node}/step"
            self.info_topic = f"{self.policy_node}/info"
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(String, self.info_topic, self._on_info, latched)
            # ~/step raw: the same bytes go into the MCAP and, decoded, into the episode (exactly paired);
            # its MCAP channel is added once its publisher (and so its QoS) is known
            if self.mcap is not None:
                self.subscribed[self.step_topic] = STEP_TYPE
            self.create_subscription(Float64MultiArray, self.step_topic, self._on_step,
                                     QoSProfile(depth=1000), raw=True)
            self.create_service(Trigger, "~/end_episode", self._srv_end)
            self.create_service(Trigger, "~/discard_episode", self._srv_discard)
            self.create_service(SetBool, "~/set_success", self._srv_success)
            self.create_timer(0.2, self._check_timeout)
            if self.mcap is not None:
                self.create_timer(self.p["discovery_period"], self._discover)
                self.create_timer(self.p["mcap_flush_period"], lambda: self.mcap.flush())
            self.create_timer(self.p["progress_period"], self._progress)
            self._deserialize, self._Float64MultiArray = deserialize_message, Float64MultiArray
            self._qos = (QoSProfile, HistoryPolicy, ReliabilityPolicy, DurabilityPolicy)
            self._DatasetWriter, self._DatasetError = DatasetWriter, DatasetError
            self.get_logger().info(
                f"recording {self.policy_node}'s steps into {self.out}"
                f"{' (appending)' if self.append else ''}; raw topics into "
                f"{self.mcap_path if self.mcap_path else 'no MCAP'}; waiting for {self.info_topic}")

        # ----- session / dataset -----
        def _open_writer(self, info: dict):
            try:
                self.writer = self._DatasetWriter(self.out, dataset_meta_from_info(info, self.mcap_path),
                                                  mode="a" if self.append else "x")
            except self._DatasetError as e:
                self.fatal = str(e)
                raise
            return self.writer

        def _on_info(self, msg) -> None:
            try:
                info = parse_info(msg.data)
            except StepFormatError as e:
                return self._warn("info", f"ignoring {self.info_topic}: {e}")
            new = info != self.info
            try:
                self.episodes.set_info(info)
            except self._DatasetError:
                return
            self.info = info
            if new:
                b = info.get("bundle") or {}
                t = info.get("training") or {}
                self.get_logger().info(
                    f"session: {info['robot']}, bundle {b.get('path')} ({t.get('task')}, {t.get('algo')}, manifest "
                    f"{str(b.get('manifest_sha256'))[:12]}), {1 / float(info['control_dt']):.0f} Hz, "
                    f"obs {info['obs_size']}, action {info['action_size']}")
                if self.p["max_episode_s"]:
                    self.episodes.max_episode_steps = max(1, int(round(self.p["max_episode_s"]
                                                                       / float(info["control_dt"]))))
                if self.mcap is not None:
                    self.mcap.add_metadata("roboreal.policy_node_info", {"json": info_json(info)})
                    self._discover()

        def _on_step(self, data: bytes, msg_info: dict) -> None:  # two arguments: rclpy passes MessageInfo
            if self.mcap is not None:
                if self.step_topic not in self.mcap.channels:  # a step before discovery saw its publisher
                    self._add_channel(self.step_topic, STEP_TYPE, self.get_publishers_info_by_topic(self.step_topic))
                self.mcap.write(self.step_topic, data, time.time_ns(), _source_time(msg_info))
            try:
                f = step_from_msg(self._deserialize(data, self._Float64MultiArray))
            except StepFormatError as e:
                self.stats["bad_steps"] += 1
                return self._warn("step", f"ignoring a step message: {e}")
            self.stats["steps"] += 1
            self.episodes.on_step(f, time.monotonic())

        def _check_timeout(self) -> None:
            self.episodes.check_timeout(time.monotonic(), self.p["step_timeout"])

        def _flush_mcap(self) -> None:
            if self.mcap is not None:
                self.mcap.flush(fsync=True)

        def _log_episode(self, msg: str) -> None:
            (self.get_logger().error if msg.startswith("ERROR") else self.get_logger().info)(msg)

        # ----- services -----
        def _srv_end(self, request, response):
            n = len(self.episodes.steps)
            name = self.episodes.end("~/end_episode")
            response.success = name is not None
            response.message = f"wrote {name} ({n} steps)" if name else "no episode running"
            return response

        def _srv_discard(self, request, response):
            n = self.episodes.discard()
            response.success = n > 0
            response.message = f"discarded the running episode ({n} steps)" if n else "no episode running"
            self.get_logger().info(response.message)
            return response

        def _srv_success(self, request, response):
            response.success = self.episodes.set_success(request.data)
            response.message = (f"the running episode is marked {'a success' if request.data else 'a failure'}"
                                if response.success else "no episode running")
            return response

        # ----- MCAP topics -----
        def _add_channel(self, topic: str, type_name: str, pubs: list) -> None:
            """The MCAP channel of `topic`, with its publishers' QoS and type hash (rosbag2's metadata)."""
            type_hash = getattr(pubs[0], "topic_type_hash", None) if pubs else None
            self.mcap.add_topic(topic, type_name, qos_profiles=[qos_profile_dict(p.qos_profile) for p in pubs],
                                type_hash=str(type_hash) if type_hash is not None else "")

        def _discover(self) -> None:
            if self.mcap is None:
                return
            if self.step_topic not in self.mcap.channels:
                pubs = self.get_publishers_info_by_topic(self.step_topic)
                if pubs:
                    self._add_channel(self.step_topic, STEP_TYPE, pubs)
            wanted = list((self.info or {}).get("topics", {}).values()) + self.extra_topics
            QoSProfile, HistoryPolicy, ReliabilityPolicy, DurabilityPolicy = self._qos
            for topic in dict.fromkeys(wanted):
                if topic in self.subscribed:
                    continue
                pubs = self.get_publishers_info_by_topic(topic)
                if not pubs:
                    continue  # subscribed once a publisher appears (its type and QoS are known then)
                type_name = pubs[0].topic_type
                try:
                    cls = message_class(type_name)
                    self._add_channel(topic, type_name, pubs)
                except Exception as e:  # noqa: BLE001  an unknown type must not stop the recording
                    self._warn(topic, f"not recording {topic} ({type_name}): {e}")
                    self.subscribed[topic] = type_name
                    continue
                best_effort = any(q.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for q in pubs)
                latched = all(q.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in pubs)
                qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=10 if latched else 200,
                    reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

                def cb(data, msg_info, topic=topic):  # two required arguments: rclpy passes MessageInfo
                    self.mcap.write(topic, data, time.time_ns(), _source_time(msg_info))

                self.create_subscription(cls, topic, cb, qos, raw=True)
                self.subscribed[topic] = type_name
                self.get_logger().info(f"recording {topic} ({type_name}{', best effort' if best_effort else ''}"
                                       f"{', latched' if latched else ''}) into the MCAP")

        # ----- output -----
        def _warn(self, key: str, msg: str) -> None:
            self.get_logger().warning(msg, throttle_duration_sec=2.0)

        def _progress(self) -> None:
            e, w = self.episodes, self.episodes.written
            running = (f"episode running: {len(e.steps)} steps, {sum(bool(f['intervention']) for f in e.steps)} "
                       f"intervention steps" if e.running else "no episode running")
            mcap = f"; MCAP {self.mcap.messages} messages on {len(self.mcap.counts)} topics" if self.mcap else ""
            self.get_logger().info(f"{running}; written {w['episodes']} episodes, {w['steps']} steps, "
                                   f"{w['labels']} labels{mcap}")

        def close(self) -> dict:
            """Write the running episode, finish the MCAP, close the dataset; returns the totals."""
            if self.writer is not None:
                self.episodes.end("the recorder stopped")
            if self.mcap is not None:
                self.mcap.finish()
            if self.writer is not None:
                self.writer.close()
            return dict(self.episodes.written)

    return Recorder()


def _source_time(msg_info: Any) -> int | None:
    """The publisher's source timestamp (ns) of a received message, if the middleware gave one."""
    try:
        return int(msg_info["source_timestamp"]) or None
    except (KeyError, TypeError, ValueError):
        return None


def run(ros_args: list[str]) -> int:
    """Run the recorder with `ros_args` (as after ``--ros-args``); returns an exit code.

    2: a bad parameter (an existing file without --append, ...) or a dataset that cannot be written."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    # The context outlives SIGINT/SIGTERM: the running episode is written and the MCAP
    # finished on the way out.
    with ros_until_signal("roboreal-record", ros_args) as stop:
        try:
            node = make_node()
        except ConfigError as e:
            print(f"[recorder] error: {e}", file=sys.stderr, flush=True)
            return 2
        code = 0
        try:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok() and node.fatal is None:
                executor.spin_once(timeout_sec=0.05)
            if node.fatal is not None:
                print(f"[recorder] error: {node.fatal}", file=sys.stderr, flush=True)
                code = 2
            totals = node.close()
            print(f"[recorder] stopped: {totals['episodes']} episodes ({totals['steps']} steps, "
                  f"{totals['labels']} labels, {totals['interventions']} intervention steps) in {node.out}"
                  + (f"; MCAP {node.mcap.messages} messages on {len(node.mcap.counts)} topics in {node.mcap_path}"
                     if node.mcap is not None else ""), flush=True)
        finally:
            node.destroy_node()
    return code
