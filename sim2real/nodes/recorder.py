"""The demonstration recorder (`roboreal record --out FILE.hdf5`): a robot session into data
DAgger retrains on, and into MCAP that ROS 2 tooling reads.

    policy node ~/step ──> episodes ──> FILE.hdf5   (roboreal dataset: `roboreal dagger --dataset`)
    policy node ~/info ──> provenance
    raw topics ─────────────────────> FILE.mcap    (ROS 2 CDR + msgdef schemas: Foxglove/rosbag2)

**Where the data comes from.** The policy node publishes, every control step in which the
policy ran, one ``~/step`` message holding the observation the policy saw, the policy's
action, the action fed to the safety chain, the chain's output mapped back to the action
space, the intervention flags, the chain's mode, a step counter, a stamp and its reset
count (`step_record.py`); and once, latched, ``~/info`` (robot, bundle checksums, control
period, observation layout, its topic names). One message per step, so observation and
actions pair *exactly*; nothing is re-derived from sensor topics here.

**Per step, in the dataset** (`roboreal.sim2real.datasets` layout, ``source="robot"``):

    obs/<group>      the observation vector the policy ran on (group: the bundle's, ``policy``)
    actions          the *applied* action: the safety chain's output in the normalized action
                     space (what the robot was told to do, after every filter)
    policy_actions   the policy's own action (also while the human drives)
    expert_actions   the human's action where it was fed to the chain in the chain's policy
                     mode (HG-DAgger: labels only at takeovers); NaN elsewhere
    intervention     1 while the human had control (``/intervention`` true). A takeover step
                     with a stale teleop stream (the chain held) is an intervention without a label
    rewards, dones   0 (unknown on a robot); dones 1 at each episode's last step

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
    ``~/set_success`` (std_srvs/SetBool) marks it a success/failure (stored as ``success``),
  * the recorder is stopped (SIGINT/SIGTERM): the running episode is written, the MCAP finished.
Each episode's attributes say why it ended (``ended_by``), its chain modes (run-length),
steps, stamps, reset count and the bundle's manifest checksum.

**Killed at any moment** (SIGKILL, the OOM killer, a crash): the dataset loses at most the
episode in progress. Episodes are written by `DatasetWriter`, whole, into an unreachable
group, flushed and fsynced, then linked: every finished episode is readable, the file is
valid and ``--append`` continues it. The MCAP is flushed (a complete chunk with its message
index) every ``mcap_flush_period`` s and before each episode is written to the dataset, so
every finished episode's ``~/step`` messages are in the MCAP too. A killed MCAP has its
header, schemas, channels and every flushed chunk, possibly a torn chunk at the end, and
no summary section or footer: readers that need the index (`mcap.reader.SeekingReader`,
``mcap info``) refuse it, streaming readers (`mcap.stream_reader.StreamReader`) read it up to
the tear, and `recover_mcap` (``roboreal record --recover FILE.mcap``; the mcap CLI's
``mcap recover`` does the same) rewrites it as a complete, indexed file. At most the last
``mcap_flush_period`` s of raw messages are lost (flushed data is in the OS's hands; the
MCAP is fsynced at each episode end, the dataset at every write).

**MCAP topics**: every topic the policy node names in ``~/info`` (joint states, IMU, cmd_vel,
goal, object pose, joint and gripper commands, ``/intervention``, ``/teleop/action``, its
e-stop, ``~/policy_action``, ``~/executed_action``, ``~/mode``, ``~/step``, ``~/info``,
``/diagnostics``) plus ``extra_topics`` (default ``/joy``). As rosbag2 does, a topic is
subscribed once a publisher for it appears (type and QoS from the ROS graph: best effort
if any publisher is, transient local if all are); messages are stored as received (CDR),
with their ``ros2msg`` schemas (the .msg definitions, dependencies concatenated), log time
= reception, publish time = the publisher's source timestamp. ``profile`` is ``ros2``. The
channels carry no ``offered_qos_profiles`` metadata: ``ros2 bag play`` replays them with its
default QoS.

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
class McapTopicWriter:
    """Serialized ROS 2 messages into an MCAP file (profile ros2, cdr, ros2msg schemas)."""

    def __init__(self, path: str | Path, compression: str = "zstd", chunk_size: int = 1 << 20):
        from mcap.writer import CompressionType, Writer

        comp = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in comp:
            raise ConfigError("mcap_compression", f"expected zstd, lz4 or none, got {compression!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb")  # never overwrite a recording
        self.writer = Writer(self._file, chunk_size=chunk_size, compression=comp[compression])
        import roboreal

        self.writer.start(profile="ros2", library=f"roboreal-recorder/{roboreal.__version__}")
        self.schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.messages = 0
        self.finished = False

    def add_topic(self, topic: str, type_name: str, metadata: dict[str, str] | None = None) -> int:
        if topic in self.channels:
            return self.channels[topic]
        if type_name not in self.schemas:
            self.schemas[type_name] = self.writer.register_schema(type_name, "ros2msg",
                                                                  message_definition(type_name).encode())
        cid = self.writer.register_channel(topic, "cdr", self.schemas[type_name], dict(metadata or {}))
        self.channels[topic] = cid
        self.counts[topic] = 0
        return cid

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        self.counts[topic] += 1
        self.messages += 1
        # sequence: the per-channel count (uint32), as rosbag2 leaves it when unknown
        self.writer.add_message(self.channels[topic], log_time_ns, bytes(data),
                                publish_time_ns if publish_time_ns else log_time_ns,
                                sequence=self.counts[topic] & 0xFFFFFFFF)

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self.writer.add_metadata(name, {k: str(v) for k, v in data.items()})

    def flush(self, fsync: bool = False) -> None:
        """End the chunk in progress and hand everything to the OS (a kill loses none of it)."""
        if self.finished:
            return
        self.writer.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def finish(self) -> None:
        """Write the summary and footer (an indexed, complete MCAP) and close."""
        if self.finished:
            return
        self.writer.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.finished = True


def recover_mcap(src: str | Path, dst: str | Path) -> dict:
    """Rewrite an MCAP cut short (a killed recorder: no summary/footer, maybe a torn last
    chunk) as a complete, indexed file: every message before the tear is kept.

    Returns ``{"messages", "channels", "complete"}`` (complete: the source had its footer)."""
    from mcap.records import Channel, Footer, Message, Metadata, Schema
    from mcap.stream_reader import StreamReader
    from mcap.writer import Writer

    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}
    messages, complete = 0, False
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        w = Writer(fout)
        w.start(profile="ros2", library="roboreal recover_mcap")
        try:
            for rec in StreamReader(fin, validate_crcs=True).records:
                if isinstance(rec, Schema) and rec.id not in schema_ids:
                    schema_ids[rec.id] = w.register_schema(rec.name, rec.encoding, rec.data)
                elif isinstance(rec, Channel) and rec.id not in channel_ids:
                    if rec.schema_id in schema_ids or rec.schema_id == 0:
                        channel_ids[rec.id] = w.register_channel(rec.topic, rec.message_encoding,
                                                                 schema_ids.get(rec.schema_id, 0), rec.metadata)
                elif isinstance(rec, Message) and rec.channel_id in channel_ids:
                    w.add_message(channel_ids[rec.channel_id], rec.log_time, rec.data, rec.publish_time,
                                  rec.sequence)
                    messages += 1
                elif isinstance(rec, Metadata):
                    w.add_metadata(rec.name, rec.metadata)
                elif isinstance(rec, Footer):
                    complete = True
        except Exception:  # noqa: BLE001
            # the tear: a record cut short (mcap's EndOfFile), or a torn chunk (a zstd/lz4 or CRC error);
            # everything before it has been copied. A complete file has no tear: re-raise.
            if complete:
                raise
        w.finish()
    return {"messages": messages, "channels": len(channel_ids), "complete": complete}


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
            w.add_step({group: f["observation"]}, f["applied_action"], 0.0, i == len(steps) - 1,
                       expert_action=f["commanded_action"] if human else None, policy_action=f["policy_action"],
                       intervention=bool(f["intervention"]))
        bundle = info.get("bundle") or {}
        name = w.end_episode(success=success, source="robot", ended_by=reason, modes=modes,
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
    from roboreal.sim2real.datasets import dataset_meta

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

    from roboreal.sim2real.datasets import DatasetError, DatasetWriter

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
            # ~/step raw: the same bytes go into the MCAP and, decoded, into the episode (exactly paired)
            if self.mcap is not None:
                self.mcap.add_topic(self.step_topic, "std_msgs/msg/Float64MultiArray")
                self.subscribed[self.step_topic] = "std_msgs/msg/Float64MultiArray"
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
        def _discover(self) -> None:
            if self.mcap is None:
                return
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
                    metadata = {}
                    th = getattr(pubs[0], "topic_type_hash", None)
                    if th is not None:
                        metadata["topic_type_hash"] = str(th)
                    self.mcap.add_topic(topic, type_name, metadata)
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
