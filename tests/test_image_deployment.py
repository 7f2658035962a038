"""Images through deployment: a policy that sees cameras, exported, loaded, and run over DDS.

The policy here is a small torch module with the deployable call convention
``policy(obs, front, wrist)``; its last action component is the front image's mean
brightness mapped to [-1, 1], so a test can tell which image reached the model. The DDS
test runs the sim bridge (rendering panda-pick-vision's cameras from the bundle's manifest)
and the policy node as subprocesses; the test process relays the front camera to the node,
so it can send a wrong resolution, the right images, or nothing.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from roboreal.policy_bundle import BundleError, ImageFedPolicy, load_bundle
from roboreal.envs.tasks.panda import FRONT_CAMERA
from ros_helpers import Probe, Process, domain_id, in_process_context, ros_env, wait_for
from image_helpers import CAMERAS, BrightnessPolicy, publish_goals



class StatePolicy(nn.Module):
    def __init__(self, obs_size: int = 21):
        super().__init__()
        self.layer = nn.Linear(obs_size, 8)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.layer(obs))


INFO = {"obs_group": "policy", "obs_size": 21, "action_size": 8, "action_type": "continuous",
        "task": "panda-pick-vision", "algo": "test", "step": 0, "checkpoint": "none"}


@pytest.fixture(scope="module")
def vision_env():
    import roboreal

    env = roboreal.make("panda-pick-vision", num_envs=2)
    yield env
    env.close()


@pytest.fixture(scope="module")
def image_bundle(vision_env, tmp_path_factory) -> Path:
    from roboreal.sim2real.bundle import write_bundle

    return write_bundle(BrightnessPolicy(), vision_env, INFO, tmp_path_factory.mktemp("image_bundle"))


def _manifest(path: Path) -> dict:
    return yaml.safe_load((path / "manifest.yaml").read_text())


# ----------------------------------------------------------------------------- export and load
def test_image_bundle_manifest_and_runtimes_agree(image_bundle, vision_env):
    images = _manifest(image_bundle)["images"]
    assert [e["camera"] for e in images] == list(CAMERAS)  # the model's call order
    for e, (name, topic) in zip(images, [("front", "/camera/front/image_raw"), ("wrist", "/camera/wrist/image_raw")]):
        assert (e["camera"], e["topic"], e["width"], e["height"], e["channels"]) == (name, topic, 64, 64, 3)
        assert (e["encoding"], e["dtype"], e["layout"], e["depth"]) == ("rgb8", "uint8", "CHW", None)
        assert e["scale"] == pytest.approx(1 / 255) and e["scaled_in_model"] is True
    # where the training cameras sat: the task's fixed camera on the world, robot.yaml's on the hand
    assert images[0]["mount"]["body"] is None and images[0]["mount"]["fovy"] == pytest.approx(FRONT_CAMERA.fovy)
    assert images[0]["mount"]["pos"] == pytest.approx([1.0, 0.0, 0.55])
    assert images[1]["mount"]["body"] == "panda_hand" and images[1]["mount"]["fovy"] == pytest.approx(75.0)

    obs, _ = vision_env.reset(seed=3)
    o = obs["policy"].numpy()
    imgs = {c: obs[c].numpy() for c in CAMERAS}  # the env's own rendered uint8 (2, 3, 64, 64)
    with torch.no_grad():
        expected = BrightnessPolicy()(obs["policy"], obs["front"], obs["wrist"]).numpy()
    onnx, script = (load_bundle(image_bundle, robot="panda", runtime=r) for r in ("onnx", "torchscript"))
    np.testing.assert_allclose(onnx.act(o, imgs), expected, atol=1e-5)
    np.testing.assert_allclose(script.act(o, imgs), expected, atol=1e-5)
    np.testing.assert_allclose(onnx.act(o[0], {c: imgs[c][0] for c in CAMERAS}), expected[0], atol=1e-5)
    assert expected[0, 7] == pytest.approx(imgs["front"][0].mean() / 127.5 - 1.0, abs=1e-5)
    fed = ImageFedPolicy(script, lambda: {c: imgs[c][1] for c in CAMERAS})  # what the policy node calls
    np.testing.assert_allclose(fed.normalized_action(o[1]), expected[1], atol=1e-5)
    assert fed.action_size == 8 and fed.manifest is script.manifest

    with pytest.raises(BundleError, match="needs images from front, wrist"):
        onnx.act(o)
    with pytest.raises(BundleError, match="no image for camera 'wrist'"):
        onnx.act(o, {"front": imgs["front"]})
    with pytest.raises(BundleError, match="camera front: image of shape"):
        onnx.act(o, {"front": imgs["front"][:, :, :32], "wrist": imgs["wrist"]})
    with pytest.raises(BundleError, match="camera front: image dtype float32"):
        onnx.act(o, {"front": imgs["front"].astype(np.float32) / 255, "wrist": imgs["wrist"]})


def test_a_manifest_and_a_model_that_disagree_on_images_are_refused(image_bundle, vision_env, tmp_path):
    import shutil

    from roboreal.sim2real.bundle import write_bundle

    # a state-only model whose manifest claims cameras: the model has no input for them
    state = write_bundle(StatePolicy(), vision_env, INFO, tmp_path / "state")
    m = _manifest(state)
    m["images"] = _manifest(image_bundle)["images"]
    (state / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    for runtime in ("onnx", "torchscript"):
        with pytest.raises(BundleError, match="no input for camera 'front'"):
            load_bundle(state, robot="panda", runtime=runtime)
    # an image model whose manifest lost its cameras: inputs the manifest does not describe
    lost = tmp_path / "lost"
    shutil.copytree(image_bundle, lost)
    m = _manifest(lost)
    del m["images"]
    (lost / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(BundleError, match="no camera for input 1 \\('front'\\)"):
        load_bundle(lost, runtime="onnx")
    with pytest.raises(BundleError, match="takes 3 inputs"):
        load_bundle(lost, runtime="torchscript")
    # an encoding this roboreal does not feed
    m = _manifest(image_bundle)
    m["images"][1]["encoding"] = "bgr8"
    shutil.copytree(image_bundle, tmp_path / "bgr", dirs_exist_ok=True)
    (tmp_path / "bgr" / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(BundleError, match=r"images\[1\] \(wrist\): encoding 'bgr8'"):
        load_bundle(tmp_path / "bgr")


# ----------------------------------------------------------------------------- images.py
@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


@pytest.mark.ros
def test_image_encodings_round_trip_and_bad_buffers_are_refused(rgb):
    import cv2

    from roboreal.sim2real.nodes import images

    as_sent = {"rgb8": rgb, "bgr8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
               "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA), "bgra8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)}
    for enc, pixels in as_sent.items():
        msg = images.image_msg(pixels, enc)
        np.testing.assert_array_equal(images.to_rgb(images.image_from_msg(msg), enc), rgb, err_msg=enc)
    mono = images.image_from_msg(images.image_msg(rgb[:, :, 0], "mono8"))
    np.testing.assert_array_equal(mono[:, :, 0], rgb[:, :, 0])
    with pytest.raises(images.ImageError, match="mono8"):
        images.to_rgb(mono, "mono8")  # no colour for an rgb8 policy
    # rows padded to a wider step (drivers align rows)
    padded = images.image_msg(rgb, "rgb8")
    padded.step = 10 * 3 + 2
    padded.data = np.pad(rgb.reshape(6, 30), ((0, 0), (0, 2))).tobytes()
    np.testing.assert_array_equal(images.image_from_msg(padded), rgb)

    def broken(**fields):
        msg = images.image_msg(rgb, "rgb8")
        for k, v in fields.items():
            setattr(msg, k, v)
        return msg

    for msg, why in [(broken(encoding="yuv422"), "encoding 'yuv422' is not understood"),
                     (broken(data=rgb.tobytes()[:-1]), "bytes of data"),
                     (broken(step=29), "step 29 is shorter than a row"),
                     (broken(width=0, height=0, step=0, data=b""), "empty image"),
                     (broken(width=11), "step 30 is shorter")]:
        with pytest.raises(images.ImageError, match=why):
            images.image_from_msg(msg)


@pytest.mark.ros
def test_compressed_depth_camera_info_and_the_policy_input(rgb):
    import cv2

    from roboreal.sim2real.nodes import images

    np.testing.assert_array_equal(images.rgb_from_compressed(images.compressed_msg(rgb, "png")), rgb)
    smooth = np.full((16, 16, 3), (200, 40, 90), dtype=np.uint8)
    jpeg = images.compressed_msg(smooth, "jpeg")
    assert jpeg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(images.rgb_from_compressed(jpeg).astype(int) - smooth).max() <= 3  # RGB, not BGR
    garbage = images.compressed_msg(rgb, "png")
    garbage.data = b"not an image"
    with pytest.raises(images.ImageError, match="could not be decoded"):
        images.rgb_from_compressed(garbage)
    gray = images.compressed_msg(rgb, "png")
    gray.data = cv2.imencode(".png", rgb[:, :, 0])[1].tobytes()
    with pytest.raises(images.ImageError, match="grayscale"):
        images.rgb_from_compressed(gray)

    levels = np.arange(256, dtype=np.float64).reshape(16, 16)
    near, far = 0.05, 2.0
    metres = near + (levels + 0.5) * (far - near) / 255  # the sim bridge's depth (bin centres)
    np.testing.assert_array_equal(images.depth_from_msg(images.depth_msg(metres), (near, far)), levels)

    info = images.camera_info_msg(64, 48, 45.0)
    fy = 48 / (2 * math.tan(math.radians(22.5)))
    np.testing.assert_allclose(info.k, [fy, 0, 32, 0, fy, 24, 0, 0, 1])
    assert (info.width, info.height) == (64, 48)

    cam = images.CameraInput("front", width=5, height=3, channels=3)
    with pytest.raises(images.ImageError, match="is 10x6, the bundle was trained on 5x3"):
        cam.accept_rgb(rgb, 1.0)
    assert cam.image is None
    cam.resize = True
    cam.accept_rgb(rgb, 1.0)
    resized = cv2.resize(rgb, (5, 3), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(cam.latest(), resized.transpose(2, 0, 1))
    assert cam.age(1.25) == pytest.approx(0.25)
    assert images.camera_topics("/camera/front/image_raw") == {
        "image": "/camera/front/image_raw", "compressed": "/camera/front/image_raw/compressed",
        "camera_info": "/camera/front/camera_info", "depth": "/camera/front/depth/image_raw"}


# ----------------------------------------------------------------------------- over DDS
class FrontRelay:
    """Relays the bridge's front camera to the topic the policy node reads (``pass``), the
    same frames at half the resolution (``wrong``), or nothing (``off``)."""

    def __init__(self, probe: Probe, source: str, target: str):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.mode = "wrong"
        self.brightness: list[tuple[float, float]] = []  # (time, the last passed frame's action[7])
        self.lock = threading.Lock()
        self.pub = probe.node.create_publisher(Image, target, qos_profile_sensor_data)
        probe.node.create_subscription(Image, source, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg) -> None:
        import cv2

        from roboreal.sim2real.nodes import images

        if self.mode == "off":
            return
        rgb = images.image_from_msg(msg)
        if self.mode == "wrong":
            msg = images.image_msg(cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA), "rgb8",
                                   msg.header.stamp, msg.header.frame_id)
        else:
            with self.lock:
                self.brightness.append((time.monotonic(), rgb.mean() / 127.5 - 1.0))
        self.pub.publish(msg)


def _diagnostic(received, key: str) -> str | None:
    if not received.msgs:
        return None
    return next((kv.value for st in received.msgs[-1].status for kv in st.values if kv.key == key), None)


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_image_policy_runs_over_dds_on_the_sim_bridge(image_bundle, tmp_path):
    """The sim bridge publishes panda-pick-vision's cameras (Image + CameraInfo) from the
    bundle's manifest; the policy node refuses a front camera of the wrong resolution (not a
    single command leaves it), runs the policy on the right images (commands pass the safety
    chain; the action shows the front image arrived), and latches the fault mode on the wire
    when the front camera falls silent."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Float64MultiArray, String

    from roboreal.robots.spec import load_robot
    from roboreal.sim2real.safety import SafetyLimits

    spec = load_robot("panda")
    domain = domain_id(165)
    env = ros_env(domain)
    bridge = Process([sys.executable, "-m", "roboreal", "sim-bridge", "--robot", "panda", "--ros-args",
                      "-p", f"bundle:={image_bundle}"], env, log=tmp_path / "bridge.log")
    node = Process([sys.executable, "-m", "roboreal.sim2real.nodes.deploy_cli", "deploy", str(image_bundle),
                    "--robot", "panda", "--ros-args", "-p", "diagnostics_period:=0.3",
                    "-r", "/camera/front/image_raw:=/relay/front/image_raw"], env, log=tmp_path / "node.log",
                   stop_timeout=8.0)
    probe = Probe(domain)
    try:
        relay = FrontRelay(probe, "/camera/front/image_raw", "/relay/front/image_raw")
        wrist = probe.listen(Image, "/camera/wrist/image_raw", qos_profile_sensor_data)
        info = probe.listen(CameraInfo, "/camera/front/camera_info", qos_profile_sensor_data)
        commands = probe.listen(Float64MultiArray, spec.ros.joint_commands)
        actions = probe.listen(Float64MultiArray, "/policy_node/policy_action")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        mode = probe.listen(String, "/policy_node/mode", latched)
        diag = probe.listen(DiagnosticArray, "/diagnostics")
        publish_goals(probe, spec.ros.goal)

        # the bridge's cameras: rgb8 at the manifest's size, CameraInfo from the front camera's fovy
        wait_for(lambda: wrist.msgs and info.msgs, 30, "the bridge's camera images", bridge)
        w = wrist.msgs[-1]
        assert (w.encoding, w.width, w.height, w.step, len(w.data)) == ("rgb8", 64, 64, 192, 64 * 64 * 3)
        fy = 64 / (2 * math.tan(math.radians(FRONT_CAMERA.fovy) / 2))
        np.testing.assert_allclose(info.msgs[-1].k, [fy, 0, 32, 0, fy, 32, 0, 0, 1], rtol=1e-6)

        # a front camera at 32x32: refused, named in the diagnostics, and the node sends nothing
        status = wait_for(lambda: (_diagnostic(diag, "camera.front.status") or "").startswith(
            "camera front's image is 32x32") and _diagnostic(diag, "camera.front.status"), 40,
            "the 32x32 front camera refused", node)
        assert "trained on 64x64" in status
        time.sleep(0.5)
        assert not commands.msgs, "a command left the node while its camera was refused"
        assert mode.msgs and mode.msgs[-1].data == "waiting"

        # the right images: the node starts, the policy runs on them
        relay.mode = "pass"
        wait_for(lambda: mode.msgs and mode.msgs[-1].data == "policy", 20, "policy mode", node)
        t_policy = time.monotonic()
        wait_for(lambda: len(actions.since(t_policy)) >= 5, 5, "policy actions", node)
        with relay.lock:
            seen = [b for _, b in relay.brightness]
        for a in actions.since(t_policy):
            # action[7] is the mean brightness of a front frame the relay passed (the arm moves a little)
            assert min(seen) - 0.02 <= a.data[7] <= max(seen) + 0.02 and a.data[7] > -0.9, (a.data[7], min(seen))

        # the front camera falls silent: the chain's fault mode (panda: hold) within image_timeout
        timeout = SafetyLimits.from_spec(spec).watchdog.command  # image_timeout 0: the command watchdog
        relay.mode = "off"
        t_off = time.monotonic()
        wait_for(lambda: mode.msgs and mode.msgs[-1].data == spec.safety.fault_mode, timeout + 2, "the fault mode",
                 node)
        assert time.monotonic() - t_off < timeout + 0.6
        wait_for(lambda: "stale camera front" in (_diagnostic(diag, "faults") or ""), 3, "the fault named", node)
        t_fault = time.monotonic()
        time.sleep(0.4)
        held = [np.array(m.data) for m in commands.since(t_fault + 0.1)]
        assert len(held) >= 3 and all(np.array_equal(h, held[0]) for h in held), "not holding"
        assert not actions.since(t_fault + 0.1), "the policy ran with a stale camera"
        margin = SafetyLimits.from_spec(spec).joint_position_margin
        lo, hi = spec.lower + margin - 1e-9, spec.upper - margin + 1e-9
        for m in commands.msgs:
            c = np.array(m.data)
            assert c.shape == (7,) and np.isfinite(c).all() and ((c >= lo) & (c <= hi)).all(), c
    finally:
        probe.close()
        rc_node = node.stop()
        rc_bridge = bridge.stop()
    assert rc_node == 0, node.output
    assert rc_bridge == 0, bridge.output
    # the cameras render in their own thread and it stopped with the bridge
    assert re.search(r"camera frames: [1-9]\d* published", bridge.output), bridge.output[-2000:]
    assert "did not stop" not in bridge.output
    assert "cameras front 64x64 on /camera/front/image_raw, wrist 64x64" in bridge.output


# ----------------------------------------------------------------------------- nodes in this process
@pytest.fixture
def node_context():
    """An rclpy context for nodes built in this process (their callbacks are called directly)."""
    with in_process_context(166) as ctx:
        yield ctx


def _params(**values):
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in values.items()]


@pytest.mark.ros
def test_policy_node_refuses_bad_image_messages_without_crashing(image_bundle, node_context, rgb):
    """Raw and compressed images reach the policy's input; a wrong step, a short buffer, an
    empty message, mono8 or another resolution are refused with the reason, never raised,
    and (running) latch the chain's fault mode naming the camera."""
    import cv2

    from roboreal.sim2real.nodes import images
    from roboreal.sim2real.nodes.policy_node import PolicyNode

    node = PolicyNode(context=node_context, parameter_overrides=_params(robot="panda", bundle=str(image_bundle)))
    try:
        front = node.cameras[0]
        frame = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_NEAREST)

        def stamped(msg):
            msg.header.stamp = node.get_clock().now().to_msg()
            return msg

        node._on_image(front, stamped(images.image_msg(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), "bgr8")))
        np.testing.assert_array_equal(front.latest(), frame.transpose(2, 0, 1))
        node._on_image(front, stamped(images.compressed_msg(frame[::-1].copy(), "png")))
        np.testing.assert_array_equal(front.latest(), frame[::-1].transpose(2, 0, 1))
        assert front.refused is None and not node.dropped

        def bad(**fields):
            msg = images.image_msg(frame, "rgb8")
            for k, v in fields.items():
                setattr(msg, k, v)
            return stamped(msg)

        for msg, why in [(bad(step=100), "step 100 is shorter than a row"),
                         (bad(data=frame.tobytes()[:1000]), "1000 bytes of data"),
                         (bad(width=0, height=0, step=0, data=b""), "empty image"),
                         (stamped(images.image_msg(frame[:, :, 0], "mono8")), "mono8"),
                         (stamped(images.image_msg(rgb, "rgb8")), "is 10x6, the bundle was trained on 64x64"),
                         (bad(encoding="16UC1"), "encoding '16UC1' is not understood")]:
            node._on_image(front, msg)
            assert why in front.refused and why in node.drop_reasons["camera front"]
        assert node.dropped["camera front"] == 6
        np.testing.assert_array_equal(front.latest(), frame[::-1].transpose(2, 0, 1))  # the last good one stays
        assert any("camera front: " in w for w in node._cameras_waiting())  # the node would not start
        node._supervise_cameras(time.monotonic())
        assert "camera front: " in node.chain.faults["plausibility"]
        assert "stale camera wrist (never received" in node.chain.faults["watchdog"]
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_sim_bridge_camera_parameters_are_checked(image_bundle, node_context, tmp_path):
    from roboreal.config import ConfigError
    from roboreal.sim2real.nodes.sim_bridge import SimBridge

    def bridge(**values):
        return SimBridge(context=node_context, parameter_overrides=_params(robot="panda", **values))

    b = bridge(bundle=str(image_bundle), cameras=["wrist"], compressed_images="png")
    try:
        assert [c.name for c in b.cameras.specs] == ["front", "wrist"] and b.cameras.rate == pytest.approx(25.0)
        assert b.cameras.describe().endswith("at 25 Hz (+ png compressed)")
    finally:
        b.destroy_node()
    b = bridge(cameras="wrist", camera_rate=10.0)
    try:
        assert [c.name for c in b.cameras.specs] == ["wrist"] and b.cameras.rate == 10.0
    finally:
        b.destroy_node()
    for values, field, why in [({"cameras": ["front"]}, "cameras", "'front' is not a camera of panda's robot.yaml"),
                               ({"cameras": ["wrist"], "compressed_images": "bmp"}, "compressed_images", "bmp"),
                               ({"bundle": str(tmp_path)}, "bundle", "not a bundle")]:
        with pytest.raises(ConfigError, match=why) as e:
            bridge(**values)
        assert e.value.field == field


@pytest.mark.ros
def test_sim_bridge_cameras_draw_what_training_drew(image_bundle, node_context):
    """The bridge rebuilds the task's front camera from the manifest's mount and renders with
    the training renderer's settings: without camera randomization, the same state gives the
    same pixels as the env's image observation."""
    import roboreal
    from roboreal.sim2real.nodes.sim_cameras import _Snapshot
    from roboreal.sim2real.nodes.sim_bridge import SimBridge

    env = roboreal.make("panda-pick-vision", num_envs=1, randomization={"enabled": False})
    bridge = SimBridge(context=node_context, parameter_overrides=_params(robot="panda", bundle=str(image_bundle)))
    try:
        obs, _ = env.reset(seed=2)
        world = env.sim.data_for(0)
        bridge.sim.data.qpos[:] = world.qpos
        bridge.cameras.world.snapshot = _Snapshot(bridge.sim.data)
        frames = bridge.cameras.renderer.render()
        for camera in CAMERAS:
            np.testing.assert_array_equal(frames[camera][0], obs[camera][0].numpy(), err_msg=camera)
    finally:
        bridge.cameras.close()
        bridge.destroy_node()
        env.close()


@pytest.mark.ros
def test_a_randomized_sim_bridge_randomizes_its_cameras_as_sim2sim_does(image_bundle, node_context):
    """`randomize` with `heavy` draws the training task's camera randomization widened x1.5
    (sim2sim's heavy preset) once at startup, seeded; `mild` keeps the training ranges."""
    from roboreal.envs.registry import task_config
    from roboreal.sim2real.nodes.sim_bridge import SimBridge
    from roboreal.sim2real.nodes.sim_cameras import _Snapshot

    trained = task_config("panda-pick-vision", {}).randomization.camera

    def frames_of(**values):
        bridge = SimBridge(context=node_context,
                           parameter_overrides=_params(robot="panda", bundle=str(image_bundle), **values))
        try:
            bridge.cameras.world.snapshot = _Snapshot(bridge.sim.data)
            return bridge.cameras.renderer, bridge.cameras.describe(), bridge.cameras.renderer.render()
        finally:
            bridge.cameras.close()
            bridge.destroy_node()

    plain, text, nominal = frames_of()
    assert plain.randomization is None and "randomized" not in text
    heavy, text, drawn = frames_of(randomize=True, randomization="heavy", seed=3)
    r = heavy.randomization
    assert (r.position, r.fovy, r.noise) == pytest.approx((1.5 * trained.position, 1.5 * trained.fovy,
                                                           1.5 * trained.noise))
    assert tuple(r.colors) == tuple(trained.colors) and "randomized (light x" in text
    d = heavy.describe(0)
    assert d["light_scale"] != 1.0 and np.abs(d["camera_offset"]).max() > 0  # a draw was made
    for camera in CAMERAS:
        assert np.abs(drawn[camera].astype(int) - nominal[camera].astype(int)).mean() > 2.0, camera
    again, _, _ = frames_of(randomize=True, randomization="heavy", seed=3)
    assert again.describe(0) == d  # seeded: the same draw
    mild, _, _ = frames_of(randomize=True, randomization="mild", seed=3)
    assert mild.randomization.position == pytest.approx(trained.position)
