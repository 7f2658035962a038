"""Policy bundles: exported models equal the training policy; mismatches are refused by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from roboreal.agents.policy import load_policy
from roboreal.agents.run_config import resolve_config
from roboreal.agents.runner import train
from roboreal.robots.spec import ROBOTS_DIR, load_robot_file
from roboreal.policy_bundle import BundleError, check_layout, check_robot, load_bundle
from roboreal.sim2real.bundle import export_bundle

# one run per policy type: Gaussian (PPO), tanh-Gaussian (SAC), greedy Q (DQN)
RUNS = {
    "gaussian": ("go1-walk", "ppo", 4, 200),
    "tanh_gaussian": ("panda-reach", "sac", 4, 64),
    "q_argmax": ("cartpole-balance-discrete", "dqn", 4, 128),
    "tanh_gaussian_pick": ("panda-pick", "sac", 2, 32),
}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, (task, algo, num_envs, steps) in RUNS.items():
        run_dir = root / kind
        train(resolve_config(task, algo, num_envs=num_envs, total_steps=steps, seed=0), run_dir, progress=False)
        out[kind] = (run_dir, export_bundle(run_dir))
    return out


@pytest.mark.parametrize("kind", ["gaussian", "tanh_gaussian", "q_argmax"])
@pytest.mark.parametrize("runtime", ["onnx", "torchscript"])
def test_exported_models_equal_the_training_policy(bundles, kind, runtime):
    run_dir, bundle_dir = bundles[kind]
    module, info = load_policy(run_dir)
    bundle = load_bundle(bundle_dir, runtime=runtime)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(512, info["obs_size"], generator=gen) * 3.0
    expected = module(obs).numpy()
    got = bundle.act(obs.numpy())
    assert got.shape == expected.shape
    if bundle.discrete:
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # single observation vectors work too
    np.testing.assert_allclose(bundle.act(obs[0].numpy()), expected[0], atol=1e-5)


def test_manifest_describes_the_deployment(bundles):
    _, bundle_dir = bundles["gaussian"]
    m = yaml.safe_load((bundle_dir / "manifest.yaml").read_text())
    assert m["robot"]["name"] == "go1"
    assert m["robot"]["source"] == "go1"  # how to find it again: the name finds roboreal's own go1
    assert m["joints"][:3] == ["FR_hip_joint", "FR_thigh_joint", "FR_calf_joint"]
    assert m["action"]["type"] == "joint_position_absolute" and m["action"]["scale"] == [0.25] * 12
    assert m["action"]["offset"] == m["default_pose"]
    assert m["control"] == {"dt": pytest.approx(0.02), "physics_dt": pytest.approx(0.005), "decimation": 4}
    names = [t["name"] for t in m["observation"]["terms"]]
    assert names == ["base_ang_vel", "projected_gravity", "velocity_command", "joint_pos", "joint_vel", "last_action"]
    assert sum(t["size"] for t in m["observation"]["terms"]) == m["observation"]["size"] == 45
    assert m["inputs"]["command"]["topic"] == "/cmd_vel"
    assert m["safety"]["tilt_limit"] == pytest.approx(0.8)
    assert set(m["files"]) == {"policy.onnx", "policy.pt"}


def test_bundle_for_another_robot_is_refused(bundles):
    _, bundle_dir = bundles["gaussian"]
    with pytest.raises(BundleError, match="bundle is for robot 'go1', not 'panda'"):
        load_bundle(bundle_dir, robot="panda")
    load_bundle(bundle_dir, robot="go1")  # the right robot loads


def _robot_copy(tmp_path: Path, name: str, edit) -> "RobotSpec":  # noqa: F821
    dst = tmp_path / name
    shutil.copytree(ROBOTS_DIR / name, dst)
    data = yaml.safe_load((dst / "robot.yaml").read_text())
    edit(data)
    (dst / "robot.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return load_robot_file(dst / "robot.yaml")


def test_different_joint_order_is_refused_naming_the_joint(bundles, tmp_path):
    _, bundle_dir = bundles["gaussian"]

    def swap(data):
        data["joints"][0], data["joints"][3] = data["joints"][3], data["joints"][0]

    robot = _robot_copy(tmp_path, "go1", swap)
    with pytest.raises(BundleError, match="joint order differs at index 0: bundle has 'FR_hip_joint', robot go1 has 'FL_hip_joint'"):
        check_robot(load_bundle(bundle_dir).manifest, robot)


def test_changed_robot_spec_is_refused_naming_the_field_else_by_checksum(bundles, tmp_path):
    _, bundle_dir = bundles["gaussian"]

    def stiffer(data):
        for j in data["joints"]:
            j["kp"] = 25.0

    robot = _robot_copy(tmp_path, "go1", stiffer)
    with pytest.raises(BundleError, match=r"pd_gains\.kp of FR_hip_joint: the bundle was trained with 30\.0, robot "
                                          r"go1's robot\.yaml has 25\.0"):
        check_robot(load_bundle(bundle_dir).manifest, robot)

    def faster(data):  # a field the manifest does not record: the checksum still catches it
        for j in data["joints"]:
            j["velocity_limit"] = 25.0

    robot = _robot_copy(tmp_path / "v", "go1", faster)
    with pytest.raises(BundleError, match="robot spec checksum changed"):
        check_robot(load_bundle(bundle_dir).manifest, robot)


def test_missing_sensor_is_refused_naming_it(bundles, tmp_path):
    _, bundle_dir = bundles["tanh_gaussian_pick"]

    def no_tracker(data):
        data["ros"].pop("object_pose")

    robot = _robot_copy(tmp_path, "panda", no_tracker)
    with pytest.raises(BundleError, match="'object_pos' needs an object pose topic"):
        check_robot(load_bundle(bundle_dir).manifest, robot)


def test_different_observation_layout_is_refused(bundles):
    _, bundle_dir = bundles["gaussian"]
    manifest = load_bundle(bundle_dir).manifest
    layout = [dict(t) for t in manifest["observation"]["terms"]]
    check_layout(manifest, layout)
    layout[3], layout[4] = layout[4], layout[3]
    with pytest.raises(BundleError, match="observation term 3 differs: bundle has joint_pos"):
        check_layout(manifest, layout)
    layout = [dict(t) for t in manifest["observation"]["terms"]]
    layout[4]["scale"] = 0.1
    with pytest.raises(BundleError, match=r"observation term 4 \(joint_vel\) scale differs"):
        check_layout(manifest, layout)
    layout = [dict(t) for t in manifest["observation"]["terms"]]
    layout[3]["wrap"] = True  # an explicit property the deployment relies on, not inferred
    with pytest.raises(BundleError, match=r"observation term 3 \(joint_pos\) wrap differs: bundle False"):
        check_layout(manifest, layout)


@pytest.mark.parametrize("name", ["policy.onnx", "policy.pt"])
def test_tampered_model_file_fails_the_checksum(bundles, tmp_path, name):
    _, bundle_dir = bundles["q_argmax"]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name}: sha256 does not match"):
        load_bundle(copy)


def test_not_a_bundle_and_wrong_format_are_refused(bundles, tmp_path):
    with pytest.raises(BundleError, match="no manifest.yaml"):
        load_bundle(tmp_path)
    _, bundle_dir = bundles["q_argmax"]
    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    m = yaml.safe_load((copy / "manifest.yaml").read_text())
    m["format"] = "roboreal-bundle/0"
    (copy / "manifest.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(BundleError, match="format 'roboreal-bundle/0'"):
        load_bundle(copy)


def test_sim2sim_runs_the_bundle_nominal_and_perturbed(bundles):
    from roboreal.envs.randomization import PRESETS as PHYSICS_PRESETS
    from roboreal.sim2real.sim2sim import evaluate_deployment, run_sim2sim
    from roboreal.sim2real.simulated_driver import HEAVY_DRIVER, DriverCfg, preset_conditions

    _, bundle_dir = bundles["gaussian"]
    result = run_sim2sim(bundle_dir, "heavy", episodes=2, seed=0)
    nominal, heavy = result["nominal"], result["perturbed"]
    for r in (nominal, heavy):
        assert r["episodes"] == 2 and len(r["returns"]) == 2
        assert np.isfinite(r["mean_return"]) and np.isfinite(r["velocity_tracking_error"])
        assert r["largest_command_step"] <= 1.0 + 1e-9  # what the chain sent kept the rate limit
    # nominal: nothing drawn, a perfect driver
    assert nominal["randomized_terms"] == [] and nominal["randomization"] == {}
    assert nominal["dropped_messages"] == 0
    assert nominal["sensor_latency_ms"] == nominal["command_latency_ms"] == [0.0, 0.0]
    # heavy: every physics term of the preset (on top of the task's own, e.g. go1's added_mass)
    # drawn for each episode, within the preset's range, and not one value for everyone (a
    # randomizer that draws nothing, or a constant, fails here)
    ranges = {k: v["range"] for k, v in PHYSICS_PRESETS["heavy"].items() if "range" in v}
    assert set(heavy["randomized_terms"]) == set(heavy["randomization"]) >= set(ranges)
    for term, (lo, hi) in ranges.items():
        drawn = np.array(heavy["randomization"][term])  # (episodes, width), float32 values
        assert drawn.shape[0] == 2, term
        assert (drawn >= lo - 1e-6).all() and (drawn <= hi + 1e-6).all(), (term, drawn)
        assert not np.array_equal(drawn[0], drawn[1]), (term, drawn)
    # ...and a late, lossy driver: latencies drawn per episode within the preset's ranges
    for key in ("sensor_latency_ms", "command_latency_ms"):
        lo, hi = HEAVY_DRIVER[key]
        assert tuple(heavy["driver"][key]) == (lo, hi)
        assert all(lo <= x <= hi for x in heavy[key]) and heavy[key][0] != heavy[key][1], (key, heavy[key])
    assert heavy["dropped_messages"] > 0
    # The drawn parameters are what the robots ran on: the nominal run's own episodes (same
    # seed, so the same commands and start states, a perfect driver, no pushes) under the heavy
    # preset's model parameters end differently, episode by episode. (With the parameters left
    # nominal they repeat exactly: sim2sim is deterministic.)
    physics_only, _ = preset_conditions("heavy")
    same_episodes = evaluate_deployment(load_bundle(bundle_dir), 2, seed=0, driver=DriverCfg(),
                                        randomization={**physics_only, "push": None})
    assert same_episodes["randomization"] and same_episodes["dropped_messages"] == 0
    for i, (a, b) in enumerate(zip(nominal["returns"], same_episodes["returns"])):
        assert a != b, f"episode {i}: the same return ({a}) under nominal and heavy physics"
    assert max(result["observation_difference"].values()) < 1e-5


def test_a_policy_with_an_observation_history_deploys(tmp_path):
    """A go1 policy that sees the last 3 gyro readings and joint velocities: the manifest records
    each term's history, and sim2sim runs it through the robot's observation builder (whose
    stacking `tests/test_observation_builder.py` holds equal to the env's)."""
    from roboreal.sim2real.sim2sim import run_sim2sim

    run_dir = tmp_path / "run"
    train(resolve_config("go1-walk", "ppo", ["env.observation_history={base_ang_vel: 3, joint_vel: 3}",
                                             "actor_hidden=[16]", "critic_hidden=[16]", "num_steps=8"],
                         num_envs=4, total_steps=64, seed=0), run_dir, progress=False)
    bundle = load_bundle(export_bundle(run_dir))
    terms = {t["name"]: (t["size"], t["history"]) for t in bundle.manifest["observation"]["terms"]}
    assert terms["base_ang_vel"] == (9, 3) and terms["joint_vel"] == (36, 3) and terms["joint_pos"] == (12, 1)
    assert bundle.manifest["observation"]["size"] == 45 + 6 + 24
    result = run_sim2sim(bundle.path, "none", episodes=2, seed=0)
    assert result["nominal"]["episodes"] == 2 and np.isfinite(result["nominal"]["velocity_tracking_error"])
    assert max(result["observation_difference"].values()) < 1e-5
