"""The demonstration recorder node (`roboreal record --out FILE.hdf5`): a robot session into
data DAgger retrains on, and into MCAP that ROS 2 tooling reads.

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

The parts, one concern each:
  * `record_episodes.py`: the dataset layout and the episode rules (when an episode starts
    and ends, success and intervention labels); no ROS,
  * `mcap_writer.py`: the MCAP file, readable after a kill, and ``--recover``; no ROS,
  * `ros2_bag.py`: the ROS 2 bag conventions in that MCAP (schemas, QoS, rosbag2 metadata),
  * this module: the node (subscriptions, services, timers) and `run`.

**Killed at any moment** (SIGKILL, the OOM killer, a crash): the dataset loses at most the
episode in progress (`record_episodes.py`), and the MCAP reads whole in the standard readers
(`mcap_writer.py`). Its open chunk is committed every ``mcap_flush_period`` s and before each
episode goes to the dataset, so every finished episode's ``~/step`` messages are in the MCAP
too: at most the last ``mcap_flush_period`` s of raw messages are lost (committed data is in
the OS's hands; the MCAP is fsynced at each episode end, the dataset at every write).

**Cameras** (a policy that sees cameras: ``~/info``'s ``images``; or the ``cameras``
parameter): each camera's topic as the policy node reads it (``<topic>`` sensor_msgs/Image,
or ``<topic>/compressed`` with its ``image_transport: compressed``), sensor-data QoS. Every
message goes raw into the MCAP (with its ``camera_info``), and is decoded as the policy node
decodes it (`images.py`: rgb8, its size checked, or resized as the node's ``resize`` says);
each recorded step stores the latest frame of every camera as ``obs/<camera>`` (3, H, W)
uint8 (`record_episodes.py`). A message that is not a usable image is counted and logged,
never recorded.

**MCAP topics**: every topic the policy node names in ``~/info`` (joint states, IMU, cmd_vel,
goal, object pose, joint and gripper commands, ``/intervention``, ``/teleop/action``, its
e-stop, ``~/policy_action``, ``~/executed_action``, ``~/mode``, ``~/step``, ``~/info``,
``/diagnostics``) plus ``extra_topics`` (default ``/joy``). As rosbag2 does, a topic is
subscribed once a publisher for it appears (type and QoS from the ROS graph: best effort
if any publisher is, transient local if all are); each channel carries its publishers'
offered QoS (`ros2_bag.py`). ``roboreal.policy_node_info`` holds the policy node's ``~/info``.

Parameters: `PARAMETERS` (defaults: this file, then ``config/recorder.yaml``, then params
files / -p overrides; ``--out`` etc. are shortcuts).

Imports rclpy at module level: the CLI imports this module only inside `record_cli.cmd_record`,
so `roboreal --help` and ``roboreal record --recover`` need no ROS.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger

from roboreal.config import ConfigError
from roboreal.data import DatasetError, DatasetWriter
from roboreal.sim2real.nodes.images import ImageError, camera_topics
from roboreal.sim2real.nodes.params import config_file, default_parameters
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.record_episodes import (EpisodeBuilder, RecordedCamera, cameras_to_record,
                                                      dataset_meta_from_info)
from roboreal.sim2real.nodes.ros2_bag import McapTopicWriter, message_class, qos_profile_dict
from roboreal.sim2real.nodes.step_record import StepFormatError, info_json, parse_info, step_from_msg

NODE_NAME = "recorder"
STEP_TYPE = "std_msgs/msg/Float64MultiArray"  # the policy node's ~/step

PARAMETERS: dict[str, tuple[Any, str]] = {
    "out": ("", "dataset file (.hdf5) the episodes are written to"),
    "append": (False, "add episodes to an existing dataset (false: an existing file is refused)"),
    "mcap": ("auto", "MCAP file of the raw topics (auto: OUT with .mcap; none: no MCAP)"),
    "policy_node": ("/policy_node", "the policy node whose ~/step and ~/info are recorded"),
    "extra_topics": (["/joy"], "topics recorded into the MCAP besides the policy node's (types from the graph)"),
    "cameras": ([""], "camera image topics stored per step as obs/<camera> (NAME=TOPIC, or TOPIC: the name is the "
                      "topic's namespace, /camera/front/image_raw -> front; a TOPIC ending in /compressed is a "
                      "CompressedImage); [\"\"]: the cameras of the policy node's ~/info images"),
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


class Recorder(Node):
    """The recorder node: ``~/step`` into `EpisodeBuilder` (the dataset), every recorded topic
    into the MCAP; `close` writes the running episode and finishes both files."""

    def __init__(self, **kwargs: Any):
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
        cams = [p["cameras"]] if isinstance(p["cameras"], str) else list(p["cameras"] or [])
        self.camera_param = [str(c) for c in cams if str(c)]
        self.cameras: dict[str, RecordedCamera] = {}  # name -> its subscription and latest frame
        self.camera_topics: set[str] = set()  # camera_info topics recorded into the MCAP besides
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
        self.get_logger().info(
            f"recording {self.policy_node}'s steps into {self.out}"
            f"{' (appending)' if self.append else ''}; raw topics into "
            f"{self.mcap_path if self.mcap_path else 'no MCAP'}; waiting for {self.info_topic}")

    # ----- session / dataset -----
    def _open_writer(self, info: dict):
        try:
            cameras = [c.name for c in cameras_to_record(info, self.camera_param, self.resolve_topic_name)]
            self.writer = DatasetWriter(self.out, dataset_meta_from_info(info, self.mcap_path, cameras),
                                        mode="a" if self.append else "x")
        except DatasetError as e:
            self.fatal = str(e)
            raise
        return self.writer

    def _on_info(self, msg) -> None:
        try:
            info = parse_info(msg.data)
        except StepFormatError as e:
            return self._warn(f"ignoring {self.info_topic}: {e}")
        new = info != self.info
        try:
            self.episodes.set_info(info)
        except DatasetError:
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
            self._subscribe_cameras(info)
            if self.mcap is not None:
                self.mcap.add_metadata("roboreal.policy_node_info", {"json": info_json(info)})
                self._discover()

    def _on_step(self, data: bytes, msg_info: dict) -> None:  # two arguments: rclpy passes MessageInfo
        if self.mcap is not None:
            if self.step_topic not in self.mcap.channels:  # a step before discovery saw its publisher
                self._add_channel(self.step_topic, STEP_TYPE, self.get_publishers_info_by_topic(self.step_topic))
            self.mcap.write(self.step_topic, data, time.time_ns(), _source_time(msg_info))
        try:
            f = step_from_msg(deserialize_message(data, Float64MultiArray))
        except StepFormatError as e:
            return self._warn(f"ignoring a step message: {e}")
        self.episodes.on_step(f, time.monotonic(), {n: c.frame for n, c in self.cameras.items()})

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
        wanted = list((self.info or {}).get("topics", {}).values()) + sorted(self.camera_topics) + self.extra_topics
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
                self._warn(f"not recording {topic} ({type_name}): {e}")
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

    # ----- cameras -----
    def _subscribe_cameras(self, info: dict) -> None:
        """Subscribe to the cameras of `info` (or the ``cameras`` parameter); the episode
        builder then records only steps that have a frame of each."""
        from rclpy.qos import qos_profile_sensor_data

        wanted = cameras_to_record(info, self.camera_param, self.resolve_topic_name)
        for cam in wanted:
            old = self.cameras.get(cam.name)
            if old is not None and old.topic == cam.topic:
                old.input = cam.input  # the same stream; the size the (new) session's policy takes
                continue
            if old is not None:
                self.destroy_subscription(old.subscription)
            cls = message_class(cam.type_name)

            def cb(data, msg_info, cam=cam, cls=cls):  # two required arguments: rclpy passes MessageInfo
                self._on_camera(cam, cls, data, msg_info)

            cam.subscription = self.create_subscription(cls, cam.topic, cb, qos_profile_sensor_data, raw=True)
            self.cameras[cam.name] = cam
            self.subscribed[cam.topic] = cam.type_name  # discovery leaves it to this subscription
            self.camera_topics.add(camera_topics(cam.topic.removesuffix("/compressed"))["camera_info"])
            self.get_logger().info(f"recording camera {cam.name} from {cam.topic} ({cam.type_name}) as obs/{cam.name}")
        for name in set(self.cameras) - {c.name for c in wanted}:
            self.destroy_subscription(self.cameras.pop(name).subscription)
        self.episodes.cameras = [c.name for c in wanted]

    def _on_camera(self, cam: RecordedCamera, cls: Any, data: bytes, msg_info: Any) -> None:
        if self.mcap is not None:
            if cam.topic not in self.mcap.channels:
                self._add_channel(cam.topic, cam.type_name, self.get_publishers_info_by_topic(cam.topic))
            self.mcap.write(cam.topic, data, time.time_ns(), _source_time(msg_info))
        try:
            cam.accept(deserialize_message(data, cls))
        except (ImageError, ValueError) as e:  # ValueError: a shape numpy/OpenCV could not take
            cam.refused += 1
            self._warn(f"camera {cam.name}: not recorded: {e}")

    # ----- output -----
    def _warn(self, msg: str) -> None:
        # rclpy throttles per call site: every warning goes through this one, so they share the 2 s
        self.get_logger().warning(msg, throttle_duration_sec=2.0)

    def _progress(self) -> None:
        e, w = self.episodes, self.episodes.written
        running = (f"episode running: {len(e.steps)} steps, {sum(bool(f['intervention']) for f in e.steps)} "
                   f"intervention steps" if e.running else "no episode running")
        mcap = f"; MCAP {self.mcap.messages} messages on {len(self.mcap.counts)} topics" if self.mcap else ""
        mcap += "".join(f"; camera {c.name}: {c.frames} frames" + (f", {c.refused} refused" if c.refused else "")
                        for c in self.cameras.values())
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


def _source_time(msg_info: Any) -> int | None:
    """The publisher's source timestamp (ns) of a received message, if the middleware gave one."""
    try:
        return int(msg_info["source_timestamp"]) or None
    except (KeyError, TypeError, ValueError):
        return None


def run(ros_args: list[str]) -> int:
    """Run the recorder with `ros_args` (as after ``--ros-args``); returns an exit code.

    2: a bad parameter (an existing file without --append, ...) or a dataset that cannot be written."""
    # The context outlives SIGINT/SIGTERM: the running episode is written and the MCAP
    # finished on the way out.
    with ros_until_signal("roboreal-record", ros_args) as stop:
        try:
            node = Recorder()
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
