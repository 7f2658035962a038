"""`panda-reach-vision`: a reach whose goal is seen in the images, not given in the observation.

The policy group is the arm's own state (joints, velocities, TCP); the goal reaches the policy
only as the marker drawn in the images (the fixed `overview` camera, which sees the whole goal
box, and the wrist camera); the `critic` group keeps the goal. Few envs and 64x64 cameras:
rendering is software OpenGL (MUJOCO_GL=egl) on CI.
"""

from __future__ import annotations

import itertools

import mujoco
import numpy as np
import pytest
import torch

import roboreal
from roboreal.agents.dagger import collect
from roboreal.agents.experts import ScriptedPandaExpert
from roboreal.data import DatasetReader
from roboreal.envs.tasks.panda import OVERVIEW_CAMERA

NOMINAL = {"randomization": {"enabled": False}}  # no pixel noise: an unchanged scene gives equal frames
CORNER_MARGIN = 4.0  # px: every goal-box corner at least this far inside the 64x64 image


def _corners(env) -> torch.Tensor:
    lo, hi = env.goal_low.cpu().numpy(), env.goal_high.cpu().numpy()
    return torch.tensor(list(itertools.product(*zip(lo, hi))), dtype=torch.float32)


def _green(img: np.ndarray) -> np.ndarray:
    """The goal marker's pixels (bright green, (0.1, 0.85, 0.1)): a (H, W) mask of a (3, H, W) frame."""
    r, g, b = img[:3].astype(int)
    return (g - np.maximum(r, b)) > 50


def _project(env, camera: str, points: np.ndarray) -> np.ndarray:
    """Pixel (u, v) of world `points` in `camera`, from the model's camera pose and field of view
    (the pinhole the sim bridge publishes as CameraInfo: f = h / (2 tan(fovy / 2)), centre w/2, h/2)."""
    m = env.model
    d = mujoco.MjData(m)
    mujoco.mj_kinematics(m, d)
    mujoco.mj_camlight(m, d)
    cid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    spec = next(c for c in env.cameras if c.name == camera)
    rot = d.cam_xmat[cid].reshape(3, 3)  # columns: image right, image up, backwards
    rel = (np.asarray(points) - d.cam_xpos[cid]) @ rot
    f = spec.height / (2 * np.tan(np.radians(m.cam_fovy[cid]) / 2))
    return np.stack([spec.width / 2 + f * rel[:, 0] / -rel[:, 2], spec.height / 2 - f * rel[:, 1] / -rel[:, 2]], 1)


def test_the_policy_group_has_no_goal_and_the_critic_keeps_it():
    env = roboreal.make("panda-reach-vision", num_envs=2, seed=0, **NOMINAL)
    try:
        assert not env.spec.goal_conditioned
        assert env.spec.observation_sizes == {"policy": 17, "critic": 20}
        assert env.spec.image_shapes == {"overview": (3, 64, 64), "wrist": (3, 64, 64)}
        assert [t["name"] for t in env.observation_layout("policy")] == ["joint_pos", "joint_vel", "ee_pos"]
        obs, _ = env.reset(seed=0)
        assert not {"desired_goal", "achieved_goal", "observation"} & set(obs)
        assert torch.allclose(obs["critic"][:, -3:], env.goal)
        # move only the goal of world 0: its critic group and its image change, its policy vector never
        env.goal[0] = torch.tensor([0.62, 0.25, 0.2]) + env.base_pos
        moved = env._compute_observations()
        assert torch.equal(moved["policy"], obs["policy"])
        assert torch.allclose(moved["critic"][0, -3:], env.goal[0]) and not torch.equal(moved["critic"][0], obs["critic"][0])
        assert torch.equal(moved["critic"][1], obs["critic"][1])
        changed = (moved["overview"][0].int() - obs["overview"][0].int()).abs().sum(0) > 30
        assert changed.sum() >= 8  # measured 24 pixels (the marker left one place, appeared at another)
        assert torch.equal(moved["overview"][1], obs["overview"][1])
    finally:
        env.close()


def test_the_goal_marker_is_drawn_where_the_goal_is_here_and_hidden_in_pick_vision():
    cams = [{"name": "overview", "pos": list(OVERVIEW_CAMERA.pos), "lookat": list(OVERVIEW_CAMERA.lookat),
             "fovy": OVERVIEW_CAMERA.fovy, "width": 64, "height": 64}]
    for task, kwargs in (("panda-reach-vision", {}), ("panda-pick-vision", {"cameras": cams,
                                                                            "image_observations": ["overview"]})):
        env = roboreal.make(task, num_envs=1, seed=0, **NOMINAL, **kwargs)
        try:
            env.reset(seed=0)
            seen = []
            for goal in ([0.35, -0.2, 0.2], [0.6, 0.2, 0.45]):
                env.goal[0] = torch.tensor(goal) + env.base_pos
                frame = env._images()["overview"][0].numpy()
                seen.append((frame, _green(frame)))
            if task == "panda-reach-vision":
                for (frame, mask), goal in zip(seen, ([0.35, -0.2, 0.2], [0.6, 0.2, 0.45])):
                    uv = _project(env, "overview", np.array([goal]) + env.base_pos.numpy())[0]
                    ys, xs = np.nonzero(mask)
                    assert len(xs) >= 4  # measured 7 and 16 pixels (the 3 cm sphere 1.5 and 1.0 m away)
                    assert np.hypot(xs.mean() + 0.5 - uv[0], ys.mean() + 0.5 - uv[1]) < 1.5  # measured 0.16 and 0.21 px
            else:  # the pick task hides the marker (render.hide_bodies): the frames are equal
                assert np.array_equal(seen[0][0], seen[1][0]) and not seen[0][1].any()
        finally:
            env.close()


def test_the_camera_sees_every_corner_of_the_goal_box():
    env = roboreal.make("panda-reach-vision", num_envs=8, seed=0, **NOMINAL)
    try:
        env.reset(seed=0)
        corners = _corners(env)
        uv = _project(env, "overview", corners.numpy())
        assert (uv >= CORNER_MARGIN).all() and (uv <= 64 - CORNER_MARGIN).all(), uv  # measured 9.0..55.2 px
        env.goal[:] = corners
        frames = env._images()["overview"].numpy()
        for i in range(8):
            ys, xs = np.nonzero(_green(frames[i]))
            assert len(xs) >= 4, (i, corners[i])  # measured 7 (the far corners) to 21 pixels
            assert np.hypot(xs.mean() + 0.5 - uv[i, 0], ys.mean() + 0.5 - uv[i, 1]) < 1.5, i  # measured <= 0.25 px
    finally:
        env.close()
    # and through the task's camera randomization (pose, lens, light, colours, pixel noise)
    env = roboreal.make("panda-reach-vision", num_envs=8, seed=1)
    try:
        env.reset(seed=1)
        env.goal[:] = _corners(env)
        frames = env._images()["overview"].numpy()
        assert all(_green(frames[i]).sum() >= 3 for i in range(8))  # measured 4-22 pixels (seeds 1-4)
    finally:
        env.close()


def test_the_scripted_expert_reaches_the_goal_it_reads_from_the_state():
    env = roboreal.make("panda-reach-vision", num_envs=16, seed=3)
    try:
        expert = ScriptedPandaExpert(env)
        obs, _ = env.reset()
        for _ in range(env.spec.max_episode_steps - 1):
            obs, *_ = env.step(expert.act(obs, env))
        # the last step before the episodes end: the TCP at the goal, the marker between the
        # fingers fills a good part of the wrist image
        wrist = [int(_green(obs["wrist"][i].numpy()).sum()) for i in range(16)]
        obs, _, terminated, truncated, info = env.step(expert.act(obs, env))
        assert bool((terminated | truncated).all())
        assert float(info["is_success"].float().mean()) >= 0.9  # measured 1.00
        assert min(wrist) >= 150, wrist  # measured 377-1,275 of 4,096 pixels (with the randomized colours)
    finally:
        env.close()


def test_collect_records_the_images_and_the_goal_free_policy_group(tmp_path):
    path = tmp_path / "reach_vision.hdf5"
    stats = collect("panda-reach-vision", "scripted", episodes=2, out=path, num_envs=2, seed=0)
    assert stats["success_rate"] == pytest.approx(1.0)
    with DatasetReader(path) as r:
        assert len(r) == 2 and r.image_shapes == {"overview": (3, 64, 64), "wrist": (3, 64, 64)}
        ep = r.episode(0)
        assert ep.obs["overview"].dtype == np.uint8 and ep.obs["overview"].shape[1:] == (3, 64, 64)
        assert ep.obs["policy"].shape[1] == 17 and ep.obs["critic"].shape[1] == 20
