"""Cameras: declared in robot.yaml / a task, added to the model, rendered into image observations.

Small images and few envs: rendering is software OpenGL (MUJOCO_GL=egl) on CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch
import yaml

import roboreal
from roboreal.config import ConfigError
from roboreal.envs.sim.camera_renderer import CameraRenderer, RenderCfg
from roboreal.robots.cameras import CameraSpec, look_at_xyaxes
from roboreal.robots.model import build_model
from roboreal.robots.spec import ROBOTS_DIR, load_robot, load_robot_file

SMALL = [{"name": "front", "pos": [1.0, 0.0, 0.55], "lookat": [0.5, 0.0, 0.05], "fovy": 45.0,
          "width": 24, "height": 16}]


def _vision_env(num_envs: int = 2, **overrides):
    kwargs = {"cameras": SMALL, "image_observations": ["front"], **overrides}
    return roboreal.make("panda-pick-vision", num_envs=num_envs, **kwargs)


def test_an_added_camera_sits_where_declared_and_looks_at_its_target():
    spec = load_robot("panda")
    cam = CameraSpec("overhead", pos=(0.5, 0.2, 1.0), lookat=(0.45, 0.0, 0.0), width=32, height=24)
    model = build_model(spec, (cam,))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "overhead")
    assert np.allclose(data.cam_xpos[cid], cam.pos)
    view = -data.cam_xmat[cid].reshape(3, 3)[:, 2]  # a MuJoCo camera looks along its -z
    want = np.subtract(cam.lookat, cam.pos)
    assert np.allclose(view, want / np.linalg.norm(want), atol=1e-6)
    assert model.cam_fovy[cid] == pytest.approx(58.0)  # the default for an added camera
    # robot.yaml's wrist camera rides on the hand: it moves with the arm
    wid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "wrist")
    assert wid >= 0 and model.cam_bodyid[wid] == mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "panda_hand")
    before = data.cam_xpos[wid].copy()
    data.qpos[0] += 0.5
    mujoco.mj_forward(model, data)
    assert np.linalg.norm(data.cam_xpos[wid] - before) > 0.05


def test_look_at_gives_a_right_handed_frame_even_looking_straight_down():
    x_y = np.array(look_at_xyaxes((0, 0, 1), (0, 0, 0)))
    x, y = x_y[:3], x_y[3:]
    assert np.isclose(np.linalg.norm(x), 1) and np.isclose(np.linalg.norm(y), 1) and abs(x @ y) < 1e-9
    assert np.allclose(np.cross(x, y), (0, 0, 1))  # z = pos - lookat


@pytest.mark.parametrize("field, value", [("width", 0), ("height", 5000), ("fovy", 200.0), ("body", "no_such_body"),
                                          ("lookat", [0.0, 0.8, 0.5]), ("name", "bad name")])
def test_a_bad_camera_in_robot_yaml_is_refused_naming_the_field(tmp_path: Path, field, value):
    robot_dir = tmp_path / "panda"
    shutil.copytree(ROBOTS_DIR / "panda", robot_dir)
    data = yaml.safe_load((robot_dir / "robot.yaml").read_text())
    data["cameras"].append({"name": "side", "body": "panda_link0", "pos": [0.0, 0.8, 0.5], "lookat": [0.5, 0.0, 0.1]})
    data["cameras"][1][field] = value
    (robot_dir / "robot.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"cameras\[1\]\.{field}"):
        load_robot_file(robot_dir / "robot.yaml")


def test_a_camera_the_model_has_is_not_placed_twice(tmp_path: Path):
    robot_dir = tmp_path / "panda"
    shutil.copytree(ROBOTS_DIR / "panda", robot_dir)
    data = yaml.safe_load((robot_dir / "robot.yaml").read_text())
    data["cameras"][0]["pos"] = [0.1, 0.0, 0.0]  # model.xml already places the wrist camera
    (robot_dir / "robot.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.pos: the model already has camera 'wrist'"):
        load_robot_file(robot_dir / "robot.yaml")


def test_an_image_observation_must_name_a_declared_camera():
    with pytest.raises(ConfigError, match=r"image_observations.*'side'.*declared: wrist, front"):
        _vision_env(image_observations=["side"])
    with pytest.raises(ConfigError, match="env.cameras.*robot.yaml declares.*wrist"):
        _vision_env(cameras=[{"name": "wrist"}])


def test_images_are_uint8_observations_that_follow_the_state_and_do_not_change_it():
    env = _vision_env(randomization={"enabled": False})
    try:
        obs, _ = env.reset(seed=0)
        assert env.spec.image_shapes == {"front": (3, 16, 24)}
        assert obs["front"].dtype == torch.uint8 and obs["front"].shape == (2, 3, 16, 24)
        assert "object_pos" not in {t["name"] for t in env.observation_layout("policy")}  # pixels, not the pose
        state = env.sim.get_state()
        first = env.camera_renderer.render()["front"]
        assert np.array_equal(env.sim.get_state(), state)  # drawing does not touch the physics
        assert np.array_equal(first, obs["front"].numpy())
        # the cube moved in world 1 only: only world 1's image changes
        obj = env.object_qpos
        env.sim.state[1, 1 + obj:1 + obj + 2] += (0.08, -0.08)
        moved = env.camera_renderer.render()["front"]
        assert np.array_equal(moved[0], first[0])
        assert np.abs(moved[1].astype(int) - first[1]).sum() > 0
    finally:
        env.close()


def test_a_reset_env_gets_a_fresh_image_and_the_final_observation_keeps_the_last_frame():
    env = _vision_env(episode_length_s=0.32, randomization={"enabled": False})  # 8 control steps
    try:
        env.reset(seed=1)
        for _ in range(env.max_episode_steps - 1):
            obs, *_ = env.step(torch.zeros(2, env.action_size))
        obs, _, _, truncated, info = env.step(torch.rand(2, env.action_size, generator=torch.Generator().manual_seed(0)) - 0.5)
        assert truncated.all()
        final, fresh = info["final_observation"]["front"], obs["front"]
        assert np.array_equal(fresh.numpy(), env.camera_renderer.render()["front"])  # the new episode's first frame
        assert not torch.equal(final, fresh)  # the arm moved during the episode; the reset put it back
    finally:
        env.close()


def test_camera_randomization_changes_what_identical_worlds_look_like():
    cam_rand = {"position": 0.02, "rotation": 0.05, "fovy": 3.0, "light": [0.6, 1.4], "colors": ["table"],
                "color": 0.1}
    plain = _vision_env(randomization={"enabled": False})
    randomized = _vision_env(randomization={"enabled": True, "camera": cam_rand})
    noisy = _vision_env(randomization={"enabled": True, "camera": {"noise": 4.0}})
    try:
        for env in (plain, randomized, noisy):
            env.reset(seed=0)
            env.sim.state[1] = env.sim.state[0]  # identical worlds
        a = plain.camera_renderer.render()["front"]
        assert np.array_equal(a[0], a[1])
        b = randomized.camera_renderer.render()["front"]
        assert np.abs(b[0].astype(int) - b[1]).mean() > 2.0
        draws = [randomized.camera_renderer.describe(i) for i in (0, 1)]
        assert draws[0]["light_scale"] != draws[1]["light_scale"]
        c1, c2 = noisy.camera_renderer.render()["front"], noisy.camera_renderer.render()["front"]
        diff = c1.astype(int) - c2
        assert 2.0 < diff.std() < 10.0  # two draws of N(0, 4) noise differ by N(0, 5.7)
    finally:
        for env in (plain, randomized, noisy):
            env.close()


def test_renderer_threads_draw_the_same_images_as_one_thread():
    env = _vision_env(num_envs=4, randomization={"enabled": False})
    try:
        env.reset(seed=2)
        one = CameraRenderer(env.sim, env.cameras, RenderCfg(nthread=1))
        two = CameraRenderer(env.sim, env.cameras, RenderCfg(nthread=2))
        try:
            a, b = one.render()["front"], two.render()["front"]
            assert np.array_equal(a, b)
            assert np.array_equal(one.render([3, 1])["front"], a[[3, 1]])
        finally:
            one.close()
            two.close()
    finally:
        env.close()


def test_the_goal_marker_is_not_in_the_images():
    env = _vision_env(num_envs=1, randomization={"enabled": False})
    try:
        env.reset(seed=0)
        r = env.camera_renderer.render_model
        goal = mujoco.mj_name2id(r, mujoco.mjtObj.mjOBJ_BODY, "goal")
        assert (r.geom_rgba[r.geom_bodyid == goal, 3] == 0).all()
        assert (env.model.geom_rgba[env.model.geom_bodyid == goal, 3] > 0).all()  # the viewer still shows it
    finally:
        env.close()
