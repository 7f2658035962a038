"""One source of truth from robot.yaml to the wire, and sim2sim through the deployment path.

One edit of a gain in robot.yaml must reach the simulated actuator, the bundle manifest,
the safety chain's torque bound and what `load_bundle` accepts; the manifest carries
what deployment needs (command ranges, goal frames); sim2sim runs the deployment code
(builder, runtime, chain, driver latency) and its observations equal training's.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from roboreal.robots.model import build_model
from roboreal.robots.spec import ROBOTS_DIR, load_robot, load_robot_file
from roboreal.policy_bundle import BundleError, load_bundle
from roboreal.sim2real.bundle import build_manifest
from roboreal.sim2real.nodes.hostile import tiny_bundle

CALF = 2  # FR_calf_joint: index among go1's actuated joints


@pytest.fixture(scope="module")
def go1_bundle(tmp_path_factory) -> Path:
    return tiny_bundle("go1", tmp_path_factory.mktemp("go1"))


@pytest.fixture(scope="module")
def panda_bundle(tmp_path_factory) -> Path:
    return tiny_bundle("panda", tmp_path_factory.mktemp("panda"))


def _go1_with_calf_kp(tmp_path: Path, kp: float) -> Path:
    """A copy of robots/go1 whose FR_calf_joint kp is `kp` (nothing else changed)."""
    shutil.copy(ROBOTS_DIR / "go1" / "model.xml", tmp_path / "model.xml")
    data = yaml.safe_load((ROBOTS_DIR / "go1" / "robot.yaml").read_text())
    assert data["joints"][CALF]["name"] == "FR_calf_joint"
    data["joints"][CALF]["kp"] = kp
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _manifest_for(spec_path: Path, template: dict) -> dict:
    """The manifest `build_manifest` writes for go1-walk on the robot at `spec_path`."""
    from roboreal.envs.registry import make

    env = make("go1-walk", num_envs=1, robot=str(spec_path))  # the robot is a task config field
    t = template["training"]
    info = {"obs_group": template["observation"]["group"], "obs_size": template["observation"]["size"],
            "action_size": template["action"]["size"], "action_type": template["action"]["space"],
            "task": t["task"], "algo": t["algo"], "checkpoint": t["checkpoint"], "step": t["step"], "env": {}}
    try:
        return build_manifest(env, info, t["run_dir"]), env
    finally:
        env.close()


def test_one_kp_edit_reaches_the_actuator_the_manifest_the_chain_and_load_bundle(tmp_path, go1_bundle):
    from roboreal.sim2real.safety import SafetyChain
    from roboreal.sim2real.safety.wire import torque_interval

    original = load_robot("go1")
    edited = load_robot_file(_go1_with_calf_kp(tmp_path, 35.0))
    # 1. the simulated actuator (MuJoCo position servo: gain kp, bias -kp q - kd qdot)
    for spec, kp in ((original, 30.0), (edited, 35.0)):
        model = build_model(spec)
        act = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, "FR_calf_joint")
        assert model.actuator_gainprm[act, 0] == kp and model.actuator_biasprm[act, 1] == -kp
    # 2. the manifest of a policy trained on it
    bundle = load_bundle(go1_bundle, robot=original)
    manifest, env = _manifest_for(tmp_path / "robot.yaml", bundle.manifest)
    assert bundle.manifest["pd_gains"]["kp"][CALF] == 30.0 and manifest["pd_gains"]["kp"][CALF] == 35.0
    assert manifest["robot"]["spec_checksum"] == edited.checksum != original.checksum
    # 3. the safety chain's torque bound: the targets whose PD torque stays within the bound
    q, dq = -1.5, 0.0
    for spec, kp in ((original, 30.0), (edited, 35.0)):
        chain = SafetyChain(spec, bundle.action_mapping, dt=0.02)
        assert chain.kp[CALF] == kp
        lo, hi = torque_interval(chain.tau_max, np.full(12, q), np.full(12, dq), chain.kp, chain.kd)
        assert hi[CALF] - q == pytest.approx(chain.tau_max[CALF] / kp)  # the widest target step the bound allows
    # 4. what load_bundle accepts: the kp-30 bundle is refused on the kp-35 robot, naming it
    with pytest.raises(BundleError, match=r"pd_gains\.kp of FR_calf_joint: the bundle was trained with 30\.0, "
                                          r"robot go1's robot\.yaml has 35\.0"):
        load_bundle(go1_bundle, robot=edited)
    # ... and a bundle exported against the edited robot.yaml is accepted there, refused on the original
    again = tmp_path / "bundle35"
    shutil.copytree(go1_bundle, again)
    manifest["files"] = bundle.manifest["files"]
    (again / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert load_bundle(again, robot=edited).manifest["pd_gains"]["kp"][CALF] == 35.0
    with pytest.raises(BundleError, match=r"pd_gains\.kp of FR_calf_joint: the bundle was trained with 35\.0"):
        load_bundle(again, robot=original)


def test_a_safety_limit_that_differs_is_named(tmp_path, go1_bundle):
    shutil.copy(ROBOTS_DIR / "go1" / "model.xml", tmp_path / "model.xml")
    data = yaml.safe_load((ROBOTS_DIR / "go1" / "robot.yaml").read_text())
    data["safety"]["max_target_rate"] = 10.0
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleError, match=r"safety\.max_target_rate: the bundle was exported with 15\.0, robot "
                                          r"go1's robot\.yaml has 10\.0"):
        load_bundle(go1_bundle, robot=load_robot_file(tmp_path / "robot.yaml"))


def test_the_manifest_carries_what_deployment_reads(go1_bundle, panda_bundle):
    from roboreal.sim2real.nodes.controller import PolicyController

    go1 = load_bundle(go1_bundle, robot="go1")
    command = go1.manifest["inputs"]["command"]
    assert command["frame"] == "base"
    assert command["ranges"] == {"min": [-1.0, -0.5, -1.0], "max": [1.0, 0.5, 1.0]}  # Go1WalkCfg's
    # the controller (policy node and sim2sim) clips velocity commands to them; a deployment may narrow them
    ctl = PolicyController(go1, load_robot("go1"))
    assert ctl.set_cmd_vel(3.0, -2.0, 0.5, arrival=0.0).tolist() == [1.0, -0.5, 0.5]
    narrow = PolicyController(go1, load_robot("go1"), cmd_min=[-0.3, -5.0, -5.0], cmd_max=[0.3, 5.0, 5.0])
    assert narrow.set_cmd_vel(3.0, -2.0, 0.5, arrival=0.0).tolist() == [0.3, -0.5, 0.5]  # never wider
    panda = load_bundle(panda_bundle, robot="panda")
    goal = panda.manifest["inputs"]["goal"]
    assert goal["frame"] == "world" and set(goal["frame_ids"]) == {"", "world", "panda_link0"}
    # the action mapping carries its margin-aware bounds, equal to the chain's
    spec = load_robot("panda")
    mapping = panda.action_mapping
    assert np.allclose(mapping.lower, spec.lower + spec.safety.joint_position_margin)
    assert np.allclose(mapping.upper, spec.upper - spec.safety.joint_position_margin)


def test_roboreal_sim2real_load_bundle_is_the_documented_entry_point(go1_bundle):
    import roboreal.sim2real as sim2real

    assert sim2real.load_bundle(go1_bundle, robot="go1").manifest["robot"]["name"] == "go1"


# --------------------------------------------------------------------------- sim2sim
@pytest.mark.parametrize("robot", ["go1", "panda"])
def test_training_and_deployment_observations_agree(robot, go1_bundle, panda_bundle):
    """The same states through the env's terms and the deployment builder, every term."""
    from roboreal.sim2real.sim2sim import evaluate_deployment
    from roboreal.sim2real.simulated_driver import preset_conditions

    bundle = load_bundle(go1_bundle if robot == "go1" else panda_bundle, robot=robot)
    randomization, _ = preset_conditions("heavy")
    result = evaluate_deployment(bundle, episodes=3, seed=0, randomization=randomization, check_observations=True)
    diff = result["observation_difference"]
    assert set(diff) == {t["name"] for t in bundle.manifest["observation"]["terms"]}
    assert max(diff.values()) < 1e-5, diff


def test_sim2sim_runs_the_chain_and_the_driver_latency_matters(go1_bundle):
    """The deployment path's own behaviour shows: a driver whose readings arrive later than
    the joint-state watchdog allows makes every robot's chain latch its fault mode (the
    training env has no such thing), a normal one does not; drops are counted."""
    from roboreal.sim2real.sim2sim import evaluate_deployment
    from roboreal.sim2real.simulated_driver import DriverCfg

    bundle = load_bundle(go1_bundle, robot="go1")
    timeout_ms = bundle.manifest["safety"]["watchdog"]["joint_states"] * 1000
    fine = evaluate_deployment(bundle, 2, 0, {"enabled": False},
                               DriverCfg(sensor_latency_ms=(5.0, 5.0), drop=0.2))
    late = evaluate_deployment(bundle, 2, 0, {"enabled": False},
                               DriverCfg(sensor_latency_ms=(timeout_ms + 30, timeout_ms + 30)))
    assert "watchdog" not in fine["faults"] and fine["policy_mode_fraction"] > 0.5
    assert late["faults"].get("watchdog") == 2 and late["policy_mode_fraction"] == 0.0
    assert 0.15 < fine["dropped_messages"] / fine["sensor_messages"] < 0.25
    assert fine["largest_command_step"] <= 1.0 + 1e-9  # the rate limit holds on what is sent
    assert math.isfinite(fine["velocity_tracking_error"])


def test_sim2sim_over_dds_scores_the_deployed_processes(go1_bundle, tmp_path):
    """The sim bridge and the policy node as processes (what the launch file starts): one
    short episode after the startup ramp, scored from the bridge's ground truth."""
    from roboreal.sim2real.sim2sim_dds import evaluate_over_dds

    result = evaluate_over_dds(go1_bundle, episodes=1, seed=0, randomization="heavy", log_dir=tmp_path,
                               episode_s=2.0)
    (episode,) = result["per_episode"]
    assert episode["length"] > 0 and episode["mode_at_end"] in ("policy", "damping")
    assert math.isfinite(episode["tracking_error"])
    log = (tmp_path / "bridge_0.log").read_text()
    assert "randomized" in log  # the bridge applied the heavy preset's draw
