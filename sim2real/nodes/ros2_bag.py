"""Serialized ROS 2 messages into an MCAP that ROS 2 bag tooling treats as a bag
(`McapTopicWriter`, written through `mcap_writer.McapFileWriter`). No rclpy: message
definitions come from the installed .msg files or, failing those, the message classes.

Messages are stored as received (CDR), with their ``ros2msg`` schemas (the .msg definitions,
dependencies concatenated: `message_definition`), log time = reception, publish time = the
publisher's source timestamp. ``profile`` is ``ros2``. As in a rosbag2 MCAP (metadata
version 9, Jazzy and later), each channel carries ``offered_qos_profiles`` (a YAML list, one
entry per publisher as the graph reported it: history, depth, reliability, durability,
deadline, lifespan, liveliness, liveliness_lease_duration as sec/nsec,
avoid_ros_namespace_conventions; policies by name, e.g. ``transient_local``:
`qos_profile_dict`), which ``ros2 bag play`` offers again (a latched topic replays latched;
rosbag2's behaviour by its source, not run here), and ``topic_type_hash`` (``RIHS01_...``);
a ``rosbag2`` metadata record holds ``serialized_metadata`` (the bag's metadata YAML:
version, storage ``mcap``, ``ros_distro`` from ``$ROS_DISTRO``, topics with their QoS and
counts; plus ``ROS_DISTRO`` when known), at the start, so that a killed recording has it,
and again with the counts at the end. rosbags decodes the QoS; it ignores metadata records
(a bare .mcap has no ``ros_distro`` there).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from roboreal.sim2real.nodes.mcap_writer import MCAP_CHUNK_SIZE, McapFileWriter

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


def message_class(type_name: str) -> type:
    """The Python class of ``pkg/msg/Name`` (imported from the installed message package)."""
    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


# ----------------------------------------------------------------------------------------
# rosbag2's metadata (QoS, the bag's metadata record) and the writer
# ----------------------------------------------------------------------------------------
ROSBAG2_METADATA_VERSION = 9  # rosbag2's BagMetadata version since Jazzy (QoS enums as names)


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
        self.file.add_metadata(name, data)

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

