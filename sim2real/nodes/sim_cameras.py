"""The cameras the sim bridge publishes (`SimCameras`): which (a bundle's manifest ``images``,
robot.yaml cameras named by the ``cameras`` parameter), how often, rendered how
(`envs.sim.camera_renderer`, speed-first, without randomization) and on which topics
(image_transport's layout, `images.camera_topics`). The messages are made by `images.py`.

Task markers: in the real cell a policy that sees its goal sees a physical object; in the
simulated cell the bridge draws it. A bundle whose manifest lists ``images[].markers``
(exported from a task that shows them, e.g. panda-reach-vision's goal sphere) gets those
bodies drawn with the trained look (`camera_renderer.style_marker`), a ``follows: goal``
marker at the last goal heard on its ``topic`` (geometry_msgs/PoseStamped, the sim's world
frame, which is the robot base; `roboreal sim2sim --over-dds` publishes its goals there) and
not at all before the first one. Bundles without markers (older ones too) see them hidden.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from roboreal.config import ConfigError
from roboreal.robots.cameras import CameraSpec
from roboreal.sim2real.nodes.images import (COMPRESSED_FORMATS, DEFAULT_CAMERA_RATE, camera_info_msg, camera_topics,
                                            compressed_msg, depth_levels_to_metres, depth_msg, image_msg)


class _OneWorld:
    """The slice of the batched-sim interface `CameraRenderer` draws from: one world whose
    state is a snapshot of the bridge's (taken under its lock, drawn outside it)."""

    num_envs = 1

    def __init__(self, model):
        self.model = model
        self.snapshot: Any = None

    def data_for(self, env_id: int) -> Any:
        return self.snapshot


class _Snapshot:
    def __init__(self, data, markers: np.ndarray | None = None):
        self.qpos, self.mocap_pos, self.mocap_quat = data.qpos.copy(), data.mocap_pos.copy(), data.mocap_quat.copy()
        self.markers = None if markers is None else markers.copy()  # (1, nmocap, 3): where the markers are drawn


_UNSEEN = (0.0, 0.0, -100.0)  # a marker before its first position: below the floor, out of every view


class SimCameras:
    """The cameras the sim bridge publishes (its `bundle` / `cameras` parameters): which, how
    often, rendered how (`envs.sim.camera_renderer`, speed-first, without randomization), on
    which topics. `due` (under the bridge's lock) snapshots the state; `submit` hands it to the
    cameras' own thread (`start`), which renders it and queues the messages in the bridge's
    outbox (with its latency), so rendering never holds up the simulation's clock. A frame
    still waiting when the next is due is replaced (the latest wins, as a camera driver that
    falls behind drops frames; counted in `dropped`). `publish` renders in the caller's thread.
    `node` is the `SimBridge` (its spec, sim, lock, outbox, latency, clock and publishers)."""

    def __init__(self, node: Any, bundle: str, cameras: list[str], rate: float, compressed: str,
                 randomization: str | None = None, seed: int = 0):
        import mujoco

        from roboreal.envs.sim.camera_renderer import CameraRenderer, RenderCfg, style_marker
        from roboreal.robots.model import build_model

        spec = node.spec
        self.node = node
        declared = {c.name: c for c in spec.cameras}
        cams: dict[str, CameraSpec] = {}
        camera_randomization = None
        markers: dict[str, dict] = {}  # body -> the manifest's marker entry (the same in every image)
        if bundle:
            manifest = _bundle_manifest(str(bundle), spec.name)
            if randomization:
                camera_randomization = camera_randomization_for(manifest, str(randomization))
            for e in manifest.get("images") or []:
                cams[e["camera"]] = _manifest_camera(e)
                markers.update({str(mk["body"]): mk for mk in e.get("markers") or []})
            rate = rate or 1.0 / float(manifest["control"]["dt"])
        for name in (str(c) for c in cameras if str(c)):
            if name not in declared:
                raise ConfigError("cameras", f"{name!r} is not a camera of {spec.name}'s robot.yaml "
                                  f"(it has {sorted(declared) or 'none'}); a task's camera comes with `bundle`")
            cams.setdefault(name, declared[name])
        if not cams:
            raise ConfigError("bundle", f"{bundle}: its manifest lists no images")
        self.rate = rate or DEFAULT_CAMERA_RATE
        self.fmt = compressed
        if self.fmt not in ("", *COMPRESSED_FORMATS):
            raise ConfigError("compressed_images", f"expected \"\", jpeg or png, got {self.fmt!r}")
        self.specs = list(cams.values())
        # the bridge's model plus the cameras robot.yaml does not declare (a task's), placed as trained;
        # the same joints and bodies, so the simulation's qpos draws the same scene
        model = build_model(spec, tuple(c for c in self.specs if c.name not in declared))
        # the markers the policy was trained to see, drawn as in training (the rest stay hidden)
        self.markers = markers
        self.marker_pos: np.ndarray | None = None
        self._follow: dict[int, str] = {}  # mocap index -> body of a marker placed at the goal heard
        for body, mk in markers.items():
            style_marker(model, body, float(mk["radius"]), mk["rgba"])
            k = int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)])
            if mk.get("follows") == "goal" and k >= 0:
                self._follow[k] = body
        render = RenderCfg(nthread=1, hide_bodies=tuple(b for b in RenderCfg().hide_bodies if b not in markers))
        self.world = _OneWorld(model)
        self.renderer = CameraRenderer(self.world, self.specs, render, camera_randomization, seed)
        if self._follow:
            nominal = [model.body_pos[int(np.flatnonzero(model.body_mocapid == k)[0])] for k in range(model.nmocap)]
            self.marker_pos = np.array(nominal, dtype=np.float64)[None]
            self.marker_pos[0, list(self._follow)] = _UNSEEN
            topics = {str(markers[b].get("topic") or spec.ros.goal or "") for b in self._follow.values()}
            if "" in topics or len(topics) != 1:
                raise ConfigError("bundle", f"{bundle}: its images show the goal marker, but no goal topic is named "
                                  f"(manifest markers[].topic or robot.yaml ros.goal): {sorted(topics)}")
            self.goal_topic = topics.pop()
            node.create_subscription(PoseStamped, self.goal_topic, self._on_goal, 10)
        self.renderer.reset([0])  # one draw for this process (nothing without randomization)
        sensor = qos_profile_sensor_data  # as every sensor stream: best effort, the latest wins
        self.pubs = {}
        for c in self.specs:
            topics = camera_topics(c.image_topic)
            cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c.name)
            self.pubs[c.name] = {
                "image": node.create_publisher(Image, topics["image"], sensor),
                "info": node.create_publisher(CameraInfo, topics["camera_info"], sensor),
                "compressed": (node.create_publisher(CompressedImage, topics["compressed"], sensor)
                               if self.fmt else None),
                "depth": node.create_publisher(Image, topics["depth"], sensor) if c.depth else None,
                "fovy": float(model.cam_fovy[cid]), "frame": f"{c.name}_optical_frame"}
        self.next_frame = 0.0
        self.published = 0
        self.dropped = 0
        self._pending: tuple[Any, _Snapshot] | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def _on_goal(self, msg: PoseStamped) -> None:
        """A goal: the markers that follow it are drawn there from the next frame on."""
        p = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z], dtype=np.float64)
        if not np.isfinite(p).all():
            self.node.get_logger().warning(f"goal with a non-finite position on {self.goal_topic}: ignored",
                                           throttle_duration_sec=5.0)
            return
        with self.node.lock:
            self.marker_pos[0, list(self._follow)] = p

    def describe(self) -> str:
        randomized = ""
        if self.renderer.randomization is not None:
            d = self.renderer.describe(0)
            randomized = (f", randomized (light x{d['light_scale']:.2f}, fovy offsets "
                          f"{[round(v, 2) for v in d['fovy_offset']]} deg, noise {self.renderer.randomization.noise:g})")
        return (f"cameras {', '.join(f'{c.name} {c.width}x{c.height} on {c.image_topic}' for c in self.specs)} "
                f"at {self.rate:g} Hz" + (f" (+ {self.fmt} compressed)" if self.fmt else "") + randomized
                + (f", drawing the {', '.join(self.markers)} marker(s)" if self.markers else "")
                + (f" at the goal heard on {self.goal_topic}" if self._follow else ""))

    def due(self, now: float) -> tuple[Any, _Snapshot] | None:
        """(stamp, state snapshot) when a frame is due at `now` (call under the bridge's lock)."""
        if now < self.next_frame:
            return None
        self.next_frame = max(self.next_frame + 1.0 / self.rate, now)
        return self.node.get_clock().now().to_msg(), _Snapshot(self.node.sim.data, self.marker_pos)

    def warm_up(self) -> None:
        """Render once, publishing nothing (in the thread that renders from now on)."""
        with self.node.lock:
            self.world.snapshot = _Snapshot(self.node.sim.data, self.marker_pos)
        if self.marker_pos is not None:
            self.renderer.set_mocap_pos(self.world.snapshot.markers)
        with contextlib.suppress(Exception):  # a failure is reported by the first real frame
            self.renderer.render()

    def publish(self, stamp: Any, snapshot: _Snapshot) -> None:
        """Render the snapshot and queue every camera's messages (with the sensors' latency)."""
        self.world.snapshot = snapshot
        if snapshot.markers is not None:  # the markers where the goal heard puts them (set_mocap_pos: every frame)
            self.renderer.set_mocap_pos(snapshot.markers)
        try:
            frames = self.renderer.render()
        except Exception as e:  # no OpenGL here: the joints still flow, the policy's camera watchdog trips
            self.node.get_logger().error(f"camera rendering failed: {type(e).__name__}: {e}",
                                         throttle_duration_sec=5.0)
            return
        out = []
        for c in self.specs:
            pubs = self.pubs[c.name]
            chw = frames[c.name][0]
            rgb = np.ascontiguousarray(chw[:3].transpose(1, 2, 0))
            frame = pubs["frame"]
            out.append((pubs["image"], image_msg(rgb, "rgb8", stamp, frame)))
            out.append((pubs["info"], camera_info_msg(c.width, c.height, pubs["fovy"], stamp, frame)))
            if pubs["compressed"] is not None:
                out.append((pubs["compressed"], compressed_msg(rgb, self.fmt, stamp, frame)))
            if pubs["depth"] is not None:
                # metres at the centre of each uint8 level, so the policy node's mapping gives the level back
                out.append((pubs["depth"], depth_msg(depth_levels_to_metres(chw[3], c.depth_range), stamp, frame)))
        release = time.monotonic() + self.node.latency
        with self.node.lock:
            self.node.outbox.extend((release, pub, msg) for pub, msg in out)
        self.published += 1

    def start(self) -> None:
        """Render and publish in a thread of the cameras' own (its OpenGL context lives there)."""
        self._thread = threading.Thread(target=self._render_loop, name="sim_cameras", daemon=True)
        self._thread.start()

    def submit(self, stamp: Any, snapshot: _Snapshot) -> None:
        """Hand a due frame to the render thread (replacing one it has not started on)."""
        with self._wake:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (stamp, snapshot)
            self._wake.notify()

    def _render_loop(self) -> None:
        self.warm_up()
        try:
            while True:
                with self._wake:
                    while self._pending is None and not self._stop:
                        self._wake.wait()
                    if self._stop:
                        return
                    frame, self._pending = self._pending, None
                self.publish(*frame)
        finally:
            self.renderer.close()  # in the thread that owns the context

    def close(self) -> None:
        """Stop the render thread (if started) and free the renderer."""
        if self._thread is None:
            self.renderer.close()
            return
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=5.0)
        self._thread = None


def camera_randomization_for(manifest: dict, randomization: str):
    """The camera randomization (a `CameraRandomizationCfg`, or None) the bridge applies with
    ``randomize`` for a bundle: its training task's, as `roboreal sim2sim` resolves it
    (`simulated_driver.camera_randomization`), scaled x1.5 for the ``heavy`` preset and x1 for
    ``mild``; a YAML file's ``randomization`` section may set ``camera`` and ``camera_scale``."""
    from roboreal.config import from_dict, load_yaml
    from roboreal.envs.randomization import PRESETS, CameraRandomizationCfg
    from roboreal.sim2real.simulated_driver import HEAVY_CAMERA_SCALE, camera_randomization

    if randomization in PRESETS:
        rand = {"enabled": True, **PRESETS[randomization],
                "camera_scale": HEAVY_CAMERA_SCALE if randomization == "heavy" else 1.0}
    else:
        data = load_yaml(randomization) or {}
        rand = {"enabled": True, "camera_scale": 1.0, **dict(data.get("randomization", data) or {})}
    train = manifest["training"]
    resolved = camera_randomization(rand, train["task"], dict(train.get("env_overrides") or {}))
    camera = resolved.get("camera")
    return from_dict(CameraRandomizationCfg, camera, source="randomization.camera") if camera else None


def _bundle_manifest(path: str, robot: str) -> dict:
    """The `bundle` parameter's manifest (only read: the bridge runs no policy)."""
    import yaml

    from roboreal.policy_bundle import BundleError, check_images

    f = Path(path) / "manifest.yaml"
    if not f.is_file():
        raise ConfigError("bundle", f"{path}: not a bundle (no manifest.yaml)")
    with open(f) as fh:
        manifest = yaml.safe_load(fh)
    try:
        check_images(manifest)
    except BundleError as e:
        raise ConfigError("bundle", str(e)) from None
    if manifest["robot"]["name"] != robot:
        raise ConfigError("bundle", f"{path} is a bundle for robot {manifest['robot']['name']!r}, this bridge "
                          f"simulates {robot!r}")
    return manifest


def _manifest_camera(e: dict) -> CameraSpec:
    """A manifest ``images`` entry as a CameraSpec: its size, topic and training placement."""
    mount, depth = e.get("mount") or {}, e.get("depth") or None
    return CameraSpec(name=str(e["camera"]), width=int(e["width"]), height=int(e["height"]), fovy=mount.get("fovy"),
                      body=mount.get("body"), pos=tuple(mount.get("pos") or (0.0, 0.0, 0.0)),
                      quat=tuple(mount["quat"]) if mount.get("quat") else None, depth=bool(depth),
                      depth_range=tuple(depth["range"]) if depth else (0.05, 2.0), topic=str(e["topic"]))
