"""PPO from pixels: an image actor (conv encoder + the actor group) beside a privileged-state
critic, on panda-pick-vision with one tiny camera, few envs and short rollouts."""

from __future__ import annotations

import io

import pytest
import torch

import roboreal
from roboreal.agents.policy import ImagePolicy, build_policy, load_policy, policy_action
from roboreal.agents.ppo import PPO, PPOConfig
from roboreal.config import ConfigError

CAMERA = [{"name": "front", "pos": [1.0, 0.0, 0.55], "lookat": [0.5, 0.0, 0.05], "fovy": 45.0,
           "width": 16, "height": 16}]
TINY = {"num_steps": 8, "num_epochs": 2, "num_minibatches": 2, "actor_hidden": [32], "critic_hidden": [32],
        "encoder_channels": 8, "encoder_strides": [2, 1], "image_features": 16, "shift_pad": 2}


def _env(num_envs: int = 2):
    return roboreal.make("panda-pick-vision", num_envs=num_envs, cameras=CAMERA, image_observations=["front"])


def test_ppo_from_pixels_trains_the_encoder_and_exports_an_image_policy():
    torch.manual_seed(0)
    ppo = PPO(_env(), PPOConfig(images="auto", **TINY))
    assert ppo.image_inputs == ["front"] and ppo.critic_group == "critic"  # the critic reads privileged state
    encoder_before = [p.detach().clone() for p in ppo.actor.encoders.parameters()]
    ppo.collect()
    images = ppo.storage.images["front"]
    assert images.dtype == torch.uint8 and images.shape == (8, 2, 3, 16, 16) and images.float().std() > 0
    metrics = ppo.update()
    ppo.storage.clear()
    metrics.update(ppo.iteration())
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert metrics["loss/augment"] > 0  # the shifted images moved the policy's mean: the term is live
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, ppo.actor.encoders.parameters()))

    state = ppo.policy_state()
    assert state["kind"] == "gaussian_image" and state["image_inputs"] == ["front"]
    assert state["args"]["image_shapes"] == [["front", [3, 16, 16]]]
    assert state["args"]["encoder"] == {"channels": 8, "strides": [2, 1], "features": 16, "head": "linear"}
    policy = build_policy(state)
    assert isinstance(policy, ImagePolicy) and policy.image_inputs == ["front"]
    obs = ppo.obs
    action = policy_action(policy, obs)
    torch.testing.assert_close(action, ppo.act_deterministic(obs))
    other = dict(obs, front=255 - obs["front"])  # the image reaches the action
    assert not torch.allclose(policy_action(policy, other), action)


def test_ppo_from_pixels_resumes_from_its_state_dict():
    torch.manual_seed(1)
    ppo = PPO(_env(), PPOConfig(images="front", **TINY))
    ppo.iteration()
    buffer = io.BytesIO()
    torch.save(ppo.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # the safe unpickler takes the uint8 images of `obs`
    assert state["obs"]["front"].dtype == torch.uint8

    restored = PPO(_env(), PPOConfig(images="front", **TINY))
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.act_deterministic(restored.obs), ppo.act_deterministic(ppo.obs))
    assert restored.iterations == 1 and restored.global_step == ppo.global_step
    # the rollout's images are not checkpointed: the next iteration refills the storage
    assert all(torch.isfinite(torch.tensor(v)) for v in restored.iteration().values())


def test_images_none_keeps_the_vector_actor_and_unknown_cameras_are_refused():
    ppo = PPO(_env(), PPOConfig(**{k: v for k, v in TINY.items() if k != "shift_pad"}))  # default images=none
    assert ppo.image_inputs == [] and not ppo.storage.images and ppo.policy_state()["kind"] == "gaussian"
    assert "image_inputs" not in ppo.policy_state()
    with pytest.raises(ConfigError, match="wrist"):
        PPO(_env(), PPOConfig(images="wrist", **TINY))
    with pytest.raises(ConfigError, match="shift_pad"):
        PPOConfig(shift_pad=-1)


def test_train_cli_runs_ppo_from_pixels(tmp_path):
    from roboreal.cli import main

    run = tmp_path / "run"
    camera = "[{name: front, pos: [1.0, 0.0, 0.55], lookat: [0.5, 0.0, 0.05], width: 16, height: 16}]"
    args = ["train", "panda-pick-vision", "--algo", "ppo", "--num-envs", "2", "--steps", "32", "--run-dir", str(run),
            "--no-progress", "images=auto", f"env.cameras={camera}", "env.image_observations=[front]",
            *[f"{k}={v}" for k, v in TINY.items()], "runner.eval_interval=0"]
    assert main(args) == 0
    assert main(["train", "--resume", str(run), "--steps", "64", "--no-progress"]) == 0  # images survive resume
    module, info = load_policy(run, "last")
    assert info["step"] == 64
    assert info["image_inputs"] == ["front"] and info["image_shapes"] == {"front": (3, 16, 16)}
    env = _env()
    obs, _ = env.reset(seed=0)
    assert policy_action(module, obs, info["obs_group"]).shape == (2, 8)
