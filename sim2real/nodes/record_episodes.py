"""The recorder's episode rules: the policy node's ``~/step`` records into dataset episodes
(`EpisodeBuilder`). No ROS: the node (`recorder.py`) feeds it decoded steps and the clock,
and tests feed it synthetic ones.

**Per step, in the dataset** (`roboreal.data` layout, ``source="robot"``):

    obs/<group>      the observation vector the policy ran on (group: the bundle's, ``policy``)
    obs/<camera>     a policy that sees cameras: the latest frame of each camera when the step
                     arrived, rgb8 (3, H, W) uint8 as the policy node decodes it (the node's own
                     frame may be one camera period older or newer); steps before every camera
                     has delivered a frame are not recorded
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
valid and ``--append`` continues it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from roboreal.data import dataset_meta
from roboreal.sim2real.nodes.images import CameraInput, decode_rgb, frame_from_msg
from roboreal.sim2real.safety.types import MODES

IMAGE_TYPE, COMPRESSED_TYPE = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"


class EpisodeBuilder:
    """Turns ``~/step`` records into dataset episodes (see the module docstring for the rules).

    `open_writer(info)` returns the `DatasetWriter` for the first session info; `before_write()`
    runs before an episode goes to the dataset (the node flushes the MCAP there, so every
    episode the dataset holds is in the MCAP too)."""

    def __init__(self, open_writer: Callable[[dict], Any], max_episode_steps: int = 0,
                 before_write: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
                 cameras: Sequence[str] = ()):
        self.open_writer = open_writer
        self.cameras = list(cameras)  # camera frames every recorded step must carry (obs/<camera>)
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
        self.without_frames = 0  # steps not recorded: a camera had not delivered a frame yet
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
        recorded = getattr(self.writer, "image_shapes", None) or {}
        for camera, shape in image_shapes(info).items():
            if camera in recorded and tuple(recorded[camera]) != tuple(shape):
                return (f"the dataset's obs/{camera} frames are {tuple(recorded[camera])} (C, H, W), the policy's "
                        f"camera {camera} is {tuple(shape)}")
        return None

    # ----- steps -----
    def on_step(self, f: dict, now: float, images: dict | None = None) -> None:
        """One ``~/step`` record (`step_record.step_from_msg`) received at `now`; `images`: the
        latest frame of each camera (``{camera: (C, H, W) uint8}``) to store with it."""
        if self.info is None:
            self.dropped["before_info"] += 1
            return
        if self.refusing:
            self.dropped["refused"] += 1
            return
        if self.cameras:
            images = images or {}
            if any(images.get(c) is None for c in self.cameras):
                self.without_frames += 1  # an episode's every step has a frame of each camera
                return
            f = {**f, "images": {c: images[c] for c in self.cameras}}
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
            w.add_step({group: f["observation"], **f.get("images", {})}, f["applied_action"], float("nan"),
                       i == len(steps) - 1,
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


def image_shapes(info: dict) -> dict[str, list[int]]:
    """{camera: [3, H, W]} of the cameras the policy node's ``~/info`` lists (``images``): the
    colour frames the recorder stores (a depth camera's depth channel is not recorded)."""
    return {str(e["camera"]): [3, int(e["height"]), int(e["width"])] for e in info.get("images") or []}


def dataset_meta_from_info(info: dict, mcap: Path | None, cameras: Sequence[str] | None = None) -> dict:
    """File attributes of a robot recording: provenance from the policy node's ~/info;
    ``image_shapes`` of its cameras (only `cameras`, when given: those recorded)."""
    training = info.get("training") or {}
    group = info.get("obs_group", "policy")
    bundle = dict(info.get("bundle") or {})
    bundle.update(task=training.get("task"), algo=training.get("algo"), run_dir=training.get("run_dir"),
                  step=training.get("step"))
    shapes = {c: v for c, v in image_shapes(info).items() if cameras is None or c in cameras}
    images = {"image_shapes": shapes} if shapes else {}
    return dataset_meta(
        task=training.get("task"), env_overrides=training.get("env_overrides") or {}, source="robot",
        expert={"kind": "human", "via": (info.get("topics") or {}).get("teleop_action")}, bundle=bundle,
        robot=info["robot"], robot_spec_checksum=info.get("robot_spec_checksum"), control_dt=float(info["control_dt"]),
        action_size=int(info["action_size"]), obs_groups={group: int(info["obs_size"])},
        observation_layout={group: info.get("observation_layout")}, joints=info.get("joints"),
        policy_node=info.get("node"), command_interface=info.get("command_interface"),
        safety_limits=info.get("safety_limits"), mcap=str(mcap) if mcap else None, recorder="roboreal record",
        **images)


# ----------------------------------------------------------------------------- cameras
class RecordedCamera:
    """One camera the recorder stores: its topic and message type, the policy's camera input
    it is decoded into (`images.CameraInput`: the size the policy takes, or None: any size,
    a camera the policy does not see), and the latest frame (3, H, W) uint8."""

    def __init__(self, name: str, topic: str, input_: CameraInput | None):
        self.name, self.topic, self.input = name, topic, input_
        self.type_name = COMPRESSED_TYPE if topic.endswith("/compressed") else IMAGE_TYPE
        self.frame: np.ndarray | None = None
        self.frames = self.refused = 0
        self.subscription: Any = None

    def accept(self, msg: Any) -> None:
        if self.input is None:  # a camera the policy does not see: any size, as sent
            rgb = decode_rgb(msg)
            self.frame = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        else:
            self.frame = frame_from_msg(self.input, msg, time.monotonic()).copy()
        self.frames += 1


def cameras_to_record(info: dict, param: list[str], resolve: Callable[[str], str]) -> list[RecordedCamera]:
    """The cameras of the policy node's ``~/info`` (``images``: topic, transport, size), or of the
    ``cameras`` parameter (NAME=TOPIC or TOPIC) when it names any."""
    policy = {str(e["camera"]): e for e in info.get("images") or []}
    if not param:
        return [RecordedCamera(name, str(e["topic"]) + ("/compressed" if e.get("transport") == "compressed" else ""),
                               CameraInput(name, int(e["width"]), int(e["height"]), 3, resize=bool(e.get("resize"))))
                for name, e in policy.items()]
    out = []
    for item in param:
        name, _, topic = item.partition("=") if "=" in item else ("", "", item)
        topic = resolve(topic)
        if not name:  # /camera/front/image_raw -> front
            parts = [s for s in topic.removesuffix("/compressed").split("/") if s]
            name = parts[-2] if len(parts) >= 2 else parts[-1]
        e = policy.get(name)
        out.append(RecordedCamera(name, topic, CameraInput(name, int(e["width"]), int(e["height"]), 3,
                                                           resize=bool(e.get("resize"))) if e else None))
    return out
