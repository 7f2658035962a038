"""A policy that sees cameras, through sim2sim: the task env renders its cameras (the task's
fixed ``front`` and robot.yaml's ``wrist``), each frame reaches the policy through the policy
node's decoders, and the camera randomization is one of the perturbations.

The toy policy's gripper action is the front image's mean brightness mapped to [-1, 1], so
the executed gripper command shows which image reached the model.
"""

from __future__ import annotations

import numpy as np
import pytest

from roboreal.config import ConfigError
from roboreal.policy_bundle import load_bundle
from image_helpers import CAMERAS, BrightnessPolicy

EPISODE_S = 0.4  # 10 control steps: enough to see the frames change, short for CI


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory):
    import roboreal
    from roboreal.sim2real.bundle import write_bundle

    env = roboreal.make("panda-pick-vision", num_envs=1)
    info = {"obs_group": "policy", "obs_size": 21, "action_size": 8, "action_type": "continuous",
            "task": "panda-pick-vision", "algo": "test", "step": 0, "checkpoint": "none",
            "env": {"episode_length_s": EPISODE_S}}
    try:
        return write_bundle(BrightnessPolicy(), env, info, tmp_path_factory.mktemp("sim2sim_image_bundle"))
    finally:
        env.close()


def test_image_bundle_runs_in_sim2sim_on_rendered_frames(image_bundle):
    from roboreal.control.action import GripperMapping
    from roboreal.robots.spec import load_robot
    from roboreal.sim2real.sim2sim import evaluate_deployment
    from roboreal.sim2real.simulated_driver import HEAVY_CAMERA_SCALE, DriverCfg, preset_conditions

    bundle = load_bundle(image_bundle, robot="panda")
    seen: list[dict] = []

    def observer(env, world, t, step, images):
        # nominal: no camera randomization, a perfect driver: the frame fed now is the current state's
        rendered = env.camera_renderer.render([world]) if env.camera_renderer.randomization is None else None
        seen.append({"world": world, "step": step, "images": images, "rendered": rendered})

    nominal = evaluate_deployment(bundle, 2, seed=0, observer=observer)
    assert np.isfinite(nominal["success_rate"]) and nominal["episodes"] == 2
    assert nominal["cameras"] == list(CAMERAS) and nominal["camera_randomization"] is None
    assert nominal["not_in_control_at_start"] == 0 and not nominal["faults"]
    to_command = GripperMapping.for_robot(load_robot("panda")).to_command
    grippers = []
    for s in seen:
        front = s["images"]["front"]
        assert front.dtype == np.uint8 and front.shape == (3, 64, 64)
        for cam in CAMERAS:  # what the policy got is what the env's renderer draws of that state
            np.testing.assert_array_equal(s["images"][cam], s["rendered"][cam][0], err_msg=cam)
        a = s["step"].policy_action
        assert a[7] == pytest.approx(front.mean() / 127.5 - 1.0, abs=1e-5)
        if s["step"].gripper is not None:  # the executed gripper command follows the image
            assert s["step"].gripper == pytest.approx(to_command(a[7]), abs=1e-9)
            grippers.append(s["step"].gripper)
    assert len(seen) >= 2 * 10 and len(grippers) >= 10
    assert nominal["camera_frames"] >= len(seen)

    # heavy: the camera randomization is drawn per episode, widened beyond training
    rand, _ = preset_conditions("heavy")
    seen.clear()
    heavy = evaluate_deployment(bundle, 2, seed=1, randomization=rand, driver=DriverCfg(), observer=observer)
    draws = heavy["camera_randomization"]
    assert draws is not None and len(draws) == 2
    lo, hi = 1 - 0.3 * HEAVY_CAMERA_SCALE, 1 + 0.3 * HEAVY_CAMERA_SCALE  # the task trains with light (0.7, 1.3)
    for d in draws:
        assert lo <= d["light_scale"] <= hi and d["light_scale"] != 1.0
        assert np.abs(d["fovy_offset"]).max() > 0 and np.abs(d["camera_offset"]).max() > 0
        assert np.abs(d["fovy_offset"]).max() <= 2.0 * HEAVY_CAMERA_SCALE
    assert draws[0]["light_scale"] != draws[1]["light_scale"]
    assert np.isfinite(heavy["success_rate"])
    for s in seen:  # still the frames fed, now randomized
        assert s["step"].policy_action[7] == pytest.approx(s["images"]["front"].mean() / 127.5 - 1.0, abs=1e-5)


def test_a_camera_the_task_does_not_render_is_refused(image_bundle):
    from roboreal.sim2real.sim2sim import evaluate_deployment

    bundle = load_bundle(image_bundle, robot="panda")
    bundle.manifest["images"][0] = {**bundle.manifest["images"][0], "camera": "side"}
    with pytest.raises(ConfigError, match="camera 'side' is not an image observation of task panda-pick-vision"):
        evaluate_deployment(bundle, 1, seed=0)


def test_rendered_frames_pass_the_policy_nodes_decoders_losslessly():
    """sim2sim hands each rendered frame to the camera input as rgb8 bytes (a depth camera's
    depth as 16UC1 mm): the policy gets the rendered pixels and depth levels back, and a frame
    of another size is refused as the policy node refuses it."""
    from roboreal.sim2real.nodes.images import CameraInput, ImageError, feed_rendered

    frame = np.random.default_rng(0).integers(0, 256, (4, 6, 8), dtype=np.uint8)
    depth = CameraInput("d", width=8, height=6, channels=4, depth_range=(0.05, 2.0))
    feed_rendered(depth, frame, 1.0)
    np.testing.assert_array_equal(depth.latest(), frame)
    rgb = CameraInput("c", width=8, height=6, channels=3)
    feed_rendered(rgb, frame[:3], 1.0)
    np.testing.assert_array_equal(rgb.latest(), frame[:3])
    with pytest.raises(ImageError, match="is 4x6, the bundle was trained on 8x6"):
        feed_rendered(rgb, frame[:3, :, :4], 2.0)
