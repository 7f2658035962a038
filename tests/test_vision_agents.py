"""Learning from pixels in the agents layer: the conv encoder, random-shift augmentation, the
image policy (deployable: TorchScript, ONNX), BC from images, and the checkpoint round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from roboreal.agents.bc import BCConfig, BCTrainer, save_checkpoint, train_bc
from roboreal.agents.policy import ImagePolicy, build_policy, evaluate, load_policy, policy_action
from roboreal.agents.vision import ConvEncoder, random_shift, resolve_image_inputs
from roboreal.config import ConfigError, to_dict
from roboreal.data import TransitionSet

SMALL = {"hidden": [32], "encoder_channels": 8, "encoder_strides": [2, 1], "image_features": 16}


def image_set(n: int = 512, size: int = 16, seed: int = 0, obs_size: int = 5) -> TransitionSet:
    """Episodes of 16 steps whose label's first component is the x position of a bright 3x3
    square in camera "front" (in [-1, 1]); the vector observation is noise, camera "wrist" is
    noise: only the front image explains the label."""
    g = torch.Generator().manual_seed(seed)
    front = torch.randint(0, 40, (n, 3, size, size), dtype=torch.uint8, generator=g)
    x = torch.randint(1, size - 2, (n,), generator=g)
    y = torch.randint(1, size - 2, (n,), generator=g)
    for i in range(n):
        front[i, :, y[i] - 1:y[i] + 2, x[i] - 1:x[i] + 2] = 255
    wrist = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.zeros(n, 2)
    labels[:, 0] = (x.float() - 1) / (size - 4) * 2 - 1
    episode = torch.arange(n) // 16
    return TransitionSet(obs={"policy": torch.randn(n, obs_size, generator=g), "front": front, "wrist": wrist},
                         labels=labels, labeled=torch.ones(n, dtype=torch.bool), episode=episode,
                         step=torch.arange(n) % 16, episode_end=(episode + 1) * 16, actions=labels.clone(),
                         next_achieved=None, names=[f"demo_{i}" for i in range(n // 16)])


def test_encoder_takes_uint8_and_the_image_policy_acts_in_range():
    enc = ConvEncoder((3, 32, 32))  # the default: 32 channels, strides (2, 2, 1, 1), 64 features
    feats = enc(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert feats.shape == (4, 64) and feats.dtype == torch.float32
    keypoints = ConvEncoder((3, 32, 32), head="spatial_softmax", features=8)
    assert keypoints(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 8)

    trainer = BCTrainer(5, 2, BCConfig(**SMALL), image_shapes=[("front", (3, 16, 16)), ("wrist", (3, 16, 16))])
    with torch.no_grad():  # a large output weight: the head must clamp
        trainer.actor.mean_net[-1].weight.mul_(1e4)
    policy = trainer.policy()
    assert isinstance(policy, ImagePolicy) and policy.image_inputs == ["front", "wrist"]
    obs = {"policy": torch.randn(6, 5), "front": torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8),
           "wrist": torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)}
    a = policy_action(policy, obs, "policy")
    assert a.shape == (6, 2) and a.abs().max() <= 1.0 and a.abs().max() == 1.0
    other = dict(obs, front=255 - obs["front"])  # the image reaches the action
    assert not torch.equal(policy_action(policy, other, "policy"), a)
    with pytest.raises(KeyError, match="front"):
        policy_action(policy, {"policy": obs["policy"], "wrist": obs["wrist"]}, "policy")


def test_random_shift_moves_the_image_keeps_shape_and_dtype_and_replicates_edges():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=g)
    pad = 2
    out = random_shift(images, pad, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode="replicate")
    crops = {(dy, dx): padded[:, :, dy:dy + 12, dx:dx + 12] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}
    for i in range(len(images)):  # every image is one crop of its edge-replicated padding
        assert any(torch.equal(out[i].float(), c[i]) for c in crops.values())
    assert torch.equal(random_shift(images, 0), images)


def test_augmentation_is_training_only():
    ts = image_set(64)
    trainer = BCTrainer(5, 2, BCConfig(**SMALL, shift_pad=3), image_shapes=[("front", (3, 16, 16))])
    idx = torch.arange(64)
    assert not torch.equal(trainer._images(ts, idx, augment=True)[0], ts.obs["front"])
    assert torch.equal(trainer._images(ts, idx, augment=False)[0], ts.obs["front"])
    assert trainer.evaluate_loss(ts) == trainer.evaluate_loss(ts)  # validation sees the images as they are
    with torch.no_grad():
        expect = ((trainer.actor(trainer.normalizer(ts.obs["policy"]), ts.obs["front"]) - ts.labels)
                  .square().sum(-1).mean())
    assert trainer.evaluate_loss(ts)[1] == pytest.approx(float(expect), rel=1e-5)


def test_bc_learns_a_label_only_the_image_explains():
    train, val = image_set(1024, seed=0), image_set(256, seed=1)
    cfg = BCConfig(**SMALL, shift_pad=1, batch_size=64, updates_per_epoch=50, max_epochs=8, patience=8,
                   learning_rate=3e-3)
    trainer, result = train_bc(train, val, cfg, seed=0)
    assert trainer.image_inputs == ["front", "wrist"]  # images=auto: every image group of the data
    constant = float(val.labels[:, 0].var(unbiased=False))  # the best constant predictor's MSE
    assert result["history"][-1]["val_mse"] < 0.2 * constant, (result["history"], constant)
    # without the images the same network cannot do better than the constant
    blind, blind_result = train_bc(train, val, BCConfig(**{**SMALL, "images": "none"}, max_epochs=2,
                                                        updates_per_epoch=50, batch_size=64), seed=0)
    assert blind.image_inputs == [] and blind.policy_state()["kind"] == "gaussian"
    assert blind_result["best_loss"] > 0.7 * constant


def test_image_policy_round_trips_through_a_checkpoint_and_exports(tmp_path):
    trainer = BCTrainer(5, 2, BCConfig(**SMALL), seed=3, image_shapes=[("front", (3, 16, 16)), ("wrist", (3, 16, 16))])
    with torch.no_grad():
        for p in trainer.actor.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = trainer.policy_state()
    assert state["kind"] == "gaussian_image" and state["image_inputs"] == ["front", "wrist"]
    meta = {"task": "panda-pick-vision", "algo": "bc", "global_step": 0}
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", state, meta, {})
    module, info = load_policy(tmp_path / "run")
    assert info["image_inputs"] == ["front", "wrist"] and info["image_shapes"]["front"] == (3, 16, 16)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(4, 5, generator=g)
    images = [torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g) for _ in range(2)]
    expected = trainer.policy()(obs, *images)
    assert torch.equal(module(obs, *images), expected)
    assert torch.equal(build_policy(state)(obs, *images), expected)

    traced = torch.jit.trace(module, (obs, *images))
    torch.testing.assert_close(traced(obs, *images), expected)
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "policy.onnx"
    names = ["obs", *info["image_inputs"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (obs, *images), str(path), dynamo=False, input_names=names, output_names=["action"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "action"]}, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"obs": obs.numpy(), "front": images[0].numpy(), "wrist": images[1].numpy()}
    np.testing.assert_allclose(session.run(None, feed)[0], expected.numpy(), atol=1e-5)


def test_images_option_picks_the_cameras():
    assert resolve_image_inputs("auto", ["front", "wrist"]) == ["front", "wrist"]
    assert resolve_image_inputs("none", ["front", "wrist"]) == []
    assert resolve_image_inputs("wrist", ["front", "wrist"]) == ["wrist"]
    with pytest.raises(ConfigError, match="top"):
        resolve_image_inputs("front,top", ["front", "wrist"])
    with pytest.raises(ConfigError, match="no camera image 'side'"):
        train_bc(image_set(32).select_episodes([0]), None, BCConfig(**SMALL, images="front"), image_inputs=["side"])


def test_evaluate_feeds_the_env_cameras_to_an_image_policy():
    from roboreal.envs import make

    env = make("panda-pick-vision", num_envs=2, seed=0)
    try:
        shapes = list(env.spec.image_shapes.items())
        trainer = BCTrainer(env.spec.observation_sizes["policy"], env.spec.action_size, BCConfig(**SMALL),
                            image_shapes=shapes)
        seen = []
        policy = trainer.policy()
        forward = policy.forward

        def spy(obs, *images):
            seen.append([tuple(i.shape) for i in images] + [i.dtype for i in images])
            return forward(obs, *images)

        policy.forward = spy
        result = evaluate(policy, env, max_steps=2)
        assert result["episodes"] == 2
        assert seen and seen[0] == [(2, *shapes[0][1]), (2, *shapes[1][1]), torch.uint8, torch.uint8]
    finally:
        env.close()


def test_dagger_distills_a_privileged_state_teacher_into_an_image_student(tmp_path):
    """The teacher reads the `critic` group (the cube's pose included); the student reads the
    `policy` group and the cameras; every recorded step carries the teacher's label and the images."""
    from roboreal.agents.dagger import DAgger, DAggerConfig
    from roboreal.agents.experts import PolicyExpert
    from roboreal.agents.networks import GaussianActor
    from roboreal.agents.normalizer import Identity
    from roboreal.agents.policy import DeterministicPolicy
    from roboreal.data import DatasetReader

    torch.manual_seed(0)
    teacher = DeterministicPolicy(Identity(), GaussianActor(30, 8, [16]), "clamp")
    with torch.no_grad():
        teacher.actor.mean_net[-1].weight.mul_(50.0)  # labels of size ~1, not ~0
    bc = BCConfig(hidden=[16], encoder_channels=4, image_features=8, max_epochs=1, updates_per_epoch=2,
                  batch_size=16, val_fraction=0.0)
    cfg = DAggerConfig(rounds=1, initial_episodes=2, episodes_per_round=2, num_envs=2, eval_episodes=2, bc=bc)
    dagger = DAgger("panda-pick-vision", PolicyExpert(teacher, "critic"), cfg, tmp_path / "run", seed=0,
                    env_overrides={"episode_length_s": 0.4})  # 10 steps
    history = dagger.run()
    assert [h["labels"] for h in history] == [20, 40]
    module, info = load_policy(tmp_path / "run")
    assert isinstance(module, ImagePolicy) and info["image_inputs"] == ["front", "wrist"]
    assert info["obs_group"] == "policy" and info["obs_size"] == 21
    with DatasetReader(tmp_path / "run" / "data.hdf5") as r:
        ep = r.episode(r.names[-1])
        assert ep.obs["front"].dtype == np.uint8 and ep.obs["front"].shape == (10, 3, 64, 64)
        with torch.no_grad():
            labels = teacher(torch.as_tensor(ep.obs["critic"])).numpy()
        np.testing.assert_allclose(ep.expert_actions, labels, atol=1e-5)
    # `roboreal bc` on the aggregated data: the task's cameras by default, the vector group on request
    from roboreal.agents.bc import run_bc

    data = tmp_path / "run" / "data.hdf5"
    res = run_bc([data], None, bc, tmp_path / "bc", eval_episodes=0)
    assert res["image_inputs"] == ["front", "wrist"]
    assert load_policy(tmp_path / "bc")[1]["image_inputs"] == ["front", "wrist"]
    run_bc([data], None, BCConfig(**{**to_dict(bc), "images": "none"}), tmp_path / "bc_blind", eval_episodes=0)
    blind, info = load_policy(tmp_path / "bc_blind")
    assert info["image_inputs"] == [] and not isinstance(blind, ImagePolicy)


def test_the_auxiliary_privileged_target_shapes_the_image_features_and_stays_out_of_the_policy():
    """bc.aux_weight: the image features also predict a privileged group (here the bright
    square's row, which no label needs); the head trains them and the policy never carries it."""
    def with_square_row(ts: TransitionSet) -> TransitionSet:
        front = ts.obs["front"]
        row = (front[:, 0] == 255).float().argmax(1).float().amax(1, keepdim=True)  # the square's top row
        ts.obs["critic"] = torch.cat([row, torch.randn(len(row), 2)], dim=1)  # + noise the head cannot predict
        return ts

    train, val = with_square_row(image_set(1024, seed=0)), with_square_row(image_set(256, seed=1))
    cfg = BCConfig(**SMALL, shift_pad=0, batch_size=64, updates_per_epoch=50, max_epochs=6, patience=6,
                   learning_rate=3e-3, aux_weight=1.0, aux_group="critic")
    trainer, _ = train_bc(train, val, cfg, seed=0)
    assert trainer.aux_head is not None
    with torch.no_grad():
        features = trainer.actor.encode(val.obs["front"], val.obs["wrist"])
        mu, sigma = trainer.aux_stats
        predicted = trainer.aux_head(features) * sigma + mu
    row_error = (predicted[:, 0] - val.obs["critic"][:, 0]).square().mean()
    assert row_error < 0.25 * val.obs["critic"][:, 0].var(), row_error  # the row is in the features
    plain = BCTrainer(5, 2, BCConfig(**SMALL), image_shapes=trainer.image_shapes)
    assert set(trainer.policy_state()["actor"]) == set(plain.policy_state()["actor"])  # no aux weights exported
    with pytest.raises(ConfigError, match="aux_group.*'nothing'"):
        train_bc(train, None, BCConfig(**SMALL, max_epochs=1, aux_weight=1.0, aux_group="nothing"))
