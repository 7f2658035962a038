"""Camera frames in a robot recording: the sim bridge (`roboreal sim-bridge --bundle`)
publishes panda-pick-vision's cameras, the policy node runs a toy image bundle on them, and
`roboreal record` stores each step's latest frames as ``obs/<camera>`` in the HDF5 episode
and the raw Image messages in the MCAP. Over DDS on loopback, this file's own ROS_DOMAIN_ID.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from ros_helpers import Probe, Process, domain_id, ros_env, wait_for
from image_helpers import BrightnessPolicy, publish_goals

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    import roboreal
    from roboreal.sim2real.bundle import write_bundle

    env = roboreal.make("panda-pick-vision", num_envs=1)
    info = {"obs_group": "policy", "obs_size": 21, "action_size": 8, "action_type": "continuous",
            "task": "panda-pick-vision", "algo": "test", "step": 0, "checkpoint": "none"}
    try:
        return write_bundle(BrightnessPolicy(), env, info, tmp_path_factory.mktemp("recording_image_bundle"))
    finally:
        env.close()


def test_episode_builder_records_frames_only_with_every_camera(tmp_path):
    """Steps before every camera has delivered are not recorded; the frames go to obs/<camera>."""
    from roboreal.data import DatasetReader, DatasetWriter
    from roboreal.sim2real.nodes.record_episodes import EpisodeBuilder, dataset_meta_from_info, image_shapes
    from roboreal.sim2real.nodes.step_record import MODES, step_fields

    info = {"node": "/policy_node", "robot": "panda", "control_dt": 0.04, "obs_size": 2, "action_size": 1,
            "obs_group": "policy", "step_fields": step_fields(2, 1), "modes": list(MODES),
            "images": [{"camera": "front", "topic": "/camera/front/image_raw", "width": 4, "height": 3}]}
    assert image_shapes(info) == {"front": [3, 3, 4]}
    path = tmp_path / "d.hdf5"
    b = EpisodeBuilder(lambda i: DatasetWriter(path, dataset_meta_from_info(i, None), fsync=False),
                       cameras=["front"])
    b.set_info(info)

    def step(k: int) -> dict:
        return {"step": k, "stamp": k * 0.04, "reset_count": 0, "mode": MODES.index("policy"), "intervention": 0.0,
                "human_action": 0.0, "observation": np.array([k, -k], float), "policy_action": np.zeros(1),
                "commanded_action": np.zeros(1), "applied_action": np.full(1, 0.1 * k)}

    frames = [np.full((3, 3, 4), 10 * k, np.uint8) for k in range(6)]
    b.on_step(step(0), 0.0, {"front": None})  # no frame yet: not recorded
    for k in range(1, 6):
        b.on_step(step(k), 0.0, {"front": frames[k]})
    b.end("test")
    b.writer.close()
    assert b.without_frames == 1
    with DatasetReader(path) as r:
        assert r.meta["image_shapes"] == {"front": [3, 3, 4]}
        ep = r.episode(0)
        assert ep.obs["front"].dtype == np.uint8 and ep.obs["front"].shape == (5, 3, 3, 4)
        np.testing.assert_array_equal(ep.obs["front"], np.stack(frames[1:]))
        np.testing.assert_array_equal(ep.obs["policy"][:, 0], [1, 2, 3, 4, 5])


def _mcap_images(path) -> list:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(schema.name, m) for schema, ch, _, m in reader.iter_decoded_messages(topics=["/camera/front/image_raw"])]


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_recorder_stores_the_cameras_the_policy_sees(image_bundle, tmp_path):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from roboreal.data import DatasetReader
    from roboreal.robots.spec import load_robot
    from roboreal.sim2real.nodes import images

    spec = load_robot("panda")
    domain = domain_id(170)
    env = ros_env(domain)
    out = tmp_path / "session.hdf5"
    bridge = Process([sys.executable, "-m", "roboreal", "sim-bridge", "--robot", "panda", "--bundle",
                      str(image_bundle), "--cameras", "wrist"], env, log=tmp_path / "bridge.log")
    node = Process([sys.executable, "-m", "roboreal", "deploy", str(image_bundle), "--robot", "panda"], env,
                   log=tmp_path / "node.log", stop_timeout=8.0)
    rec = Process([sys.executable, "-m", "roboreal", "record", "--out", str(out), "--max-episode-s", "0.6"], env,
                  log=tmp_path / "rec.log", stop_timeout=20)
    probe = Probe(domain)
    try:
        published: dict[bytes, np.ndarray] = {}  # the bridge's front frames, by their bytes
        lock = threading.Lock()

        def on_front(msg):
            rgb = images.image_from_msg(msg)
            with lock:
                published[bytes(msg.data)] = rgb.transpose(2, 0, 1).copy()

        probe.node.create_subscription(Image, "/camera/front/image_raw", on_front, qos_profile_sensor_data)
        publish_goals(probe, spec.ros.goal)
        rec.wait_output("recording camera front from /camera/front/image_raw", 60)
        wait_for(lambda: "wrote demo_0" in rec.output, 60, "the first episode written", rec)
    finally:
        probe.close()
        rc = rec.stop(), node.stop(), bridge.stop()
    assert rc == (0, 0, 0), (rec.output, node.output, bridge.output)
    assert "cameras front 64x64 on /camera/front/image_raw, wrist 64x64" in bridge.output  # --bundle, --cameras

    with DatasetReader(out) as r:
        assert r.meta["image_shapes"] == {"front": [3, 64, 64], "wrist": [3, 64, 64]}
        ep = r.episode(0)
        frames = ep.obs["front"]
        assert frames.dtype == np.uint8 and frames.shape == (len(ep.actions), 3, 64, 64) and len(frames) >= 10
        assert ep.obs["wrist"].shape == frames.shape
        with lock:
            sent = list(published.values())
        # every recorded frame is one the bridge published, exactly (rgb8 is lossless)
        for k, f in enumerate(frames):
            assert any(np.array_equal(f, s) for s in sent), f"step {k}: a frame the bridge did not publish"
        # and the policy saw (nearly) these frames: its gripper action is the front image's brightness
        brightness = frames.reshape(len(frames), -1).mean(1) / 127.5 - 1.0
        np.testing.assert_allclose(ep.policy_actions[:, 7], brightness, atol=0.02)
    mcap = _mcap_images(out.with_suffix(".mcap"))
    assert len(mcap) >= len(frames) and {name for name, _ in mcap} == {"sensor_msgs/msg/Image"}
    m = mcap[0][1]
    assert (m.encoding, m.width, m.height) == ("rgb8", 64, 64)
    assert bytes(m.data) in {f.transpose(1, 2, 0).tobytes() for f in sent}


def test_which_cameras_the_recorder_subscribes_to():
    from roboreal.sim2real.nodes.record_episodes import COMPRESSED_TYPE, IMAGE_TYPE, cameras_to_record

    info = {"images": [{"camera": "front", "topic": "/camera/front/image_raw", "width": 64, "height": 48,
                        "transport": "compressed", "resize": True}]}
    (front,) = cameras_to_record(info, [], str)  # the policy node's: its transport, size and resize
    assert (front.name, front.topic, front.type_name) == ("front", "/camera/front/image_raw/compressed",
                                                          COMPRESSED_TYPE)
    assert (front.input.width, front.input.height, front.input.resize) == (64, 48, True)
    named = cameras_to_record(info, ["/camera/wrist/image_raw", "side=/cell/cam/image_raw/compressed",
                                     "front=/relay/front"], str)
    assert [(c.name, c.topic, c.type_name) for c in named] == [
        ("wrist", "/camera/wrist/image_raw", IMAGE_TYPE), ("side", "/cell/cam/image_raw/compressed", COMPRESSED_TYPE),
        ("front", "/relay/front", IMAGE_TYPE)]
    assert named[0].input is None and named[2].input.width == 64  # a camera the policy sees keeps its size
