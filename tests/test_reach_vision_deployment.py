"""Deploying a `panda-reach-vision` bundle: a policy that reads no goal (it sees the goal
marker in its images) takes control, and the simulated cell draws the marker it must see.

The robot (panda) declares a goal topic, so the safety chain's command watchdog is armed; a
policy that does not read the goal must still get control (its own decision is the command),
while a policy that reads the goal is held until a goal arrives and whenever it goes stale.
The sim bridge draws the goal marker from the bundle manifest's ``images[].markers``, at the
goal it hears, as training drew it. Toy policies only (tiny torch modules), few steps.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from roboreal.policy_bundle import BundleError, load_bundle
from roboreal.robots.spec import load_robot

NOMINAL = {"randomization": {"enabled": False}}
CAMERAS = ("overview", "wrist")
GREEN = (0.1, 0.85, 0.1, 1.0)  # panda-reach-vision's goal marker (PandaReachVisionCfg.goal_marker_rgba)


class SeeingPolicy(nn.Module):
    """``policy(obs, overview, wrist)`` -> 7 small joint actions (|a| <= 0.1) from the arm's
    state and both images (panda-reach-vision's call convention)."""

    image_inputs = list(CAMERAS)

    def __init__(self, obs_size: int = 17):
        super().__init__()
        torch.manual_seed(0)
        self.obs_layer = nn.Linear(obs_size, 7)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.image_layer = nn.Linear(8, 7)

    def forward(self, obs: torch.Tensor, overview: torch.Tensor, wrist: torch.Tensor) -> torch.Tensor:
        o = self.conv(overview.float() / 255.0).mean((2, 3))
        w = self.conv(wrist.float() / 255.0).mean((2, 3))
        return 0.05 + 0.05 * torch.tanh(self.obs_layer(obs) + self.image_layer(torch.cat([o, w], 1)))


class GoalPolicy(nn.Module):
    """panda-reach's state policy (it reads the goal): 7 small joint actions."""

    def __init__(self, obs_size: int):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(obs_size, 7)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 0.05 + 0.05 * torch.tanh(self.layer(obs))


def _info(task: str, obs_size: int) -> dict:
    return {"obs_group": "policy", "obs_size": obs_size, "action_size": 7, "action_type": "continuous",
            "task": task, "algo": "test", "step": 0, "checkpoint": "none", "env": {"episode_length_s": 0.4}}


@pytest.fixture(scope="module")
def reach_vision_env():
    import roboreal

    env = roboreal.make("panda-reach-vision", num_envs=1, seed=0, **NOMINAL)
    yield env
    env.close()


@pytest.fixture(scope="module")
def vision_bundle(reach_vision_env, tmp_path_factory):
    from roboreal.sim2real.bundle import write_bundle

    return write_bundle(SeeingPolicy(), reach_vision_env, _info("panda-reach-vision", 17),
                        tmp_path_factory.mktemp("reach_vision_bundle"))


@pytest.fixture(scope="module")
def goal_bundle(tmp_path_factory):
    import roboreal
    from roboreal.sim2real.bundle import write_bundle

    env = roboreal.make("panda-reach", num_envs=1, seed=0)
    try:
        size = env.spec.observation_sizes["policy"]
        return write_bundle(GoalPolicy(size), env, _info("panda-reach", size), tmp_path_factory.mktemp("goal_bundle"))
    finally:
        env.close()


def _manifest(path) -> dict:
    return yaml.safe_load((path / "manifest.yaml").read_text())


# ----------------------------------------------------------------------------- the manifest
def test_the_manifest_reads_no_goal_and_says_its_images_show_the_goal_marker(vision_bundle, tmp_path):
    import shutil

    spec = load_robot("panda")
    m = _manifest(vision_bundle)
    assert m["inputs"] == {}
    for e in m["images"]:
        assert e["markers"] == [{"body": "goal", "radius": pytest.approx(0.03), "rgba": pytest.approx(GREEN),
                                 "follows": "goal", "topic": spec.ros.goal}], e["camera"]
    # a malformed marker is refused, naming it; a manifest without markers (older bundles) loads
    broken = tmp_path / "broken"
    shutil.copytree(vision_bundle, broken)
    m["images"][1]["markers"][0]["rgba"] = [0.1, 2.0, 0.1, 1.0]
    (broken / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(BundleError, match=r"images\[1\] \(wrist\)\.markers\[0\] \(goal\): radius"):
        load_bundle(broken, robot="panda")
    for e in m["images"]:
        del e["markers"]
    (broken / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    assert load_bundle(broken, robot="panda").image_inputs[0].get("markers") is None


# ----------------------------------------------------------------------------- the controller
def _run_controller(bundle_path, seconds: float, goal_until: float | None = None, images: bool = False):
    """Feed a PolicyController the robot standing at its default pose (fresh joint states every
    step; a goal every step until `goal_until`); returns the chain's mode at each step."""
    from roboreal.sim2real.nodes.controller import PolicyController

    spec = load_robot("panda")
    bundle = load_bundle(bundle_path, robot=spec)
    if images:
        from roboreal.policy_bundle import ImageFedPolicy

        blank = {c: np.zeros((3, 64, 64), np.uint8) for c in CAMERAS}
        bundle = ImageFedPolicy(bundle, lambda: blank)
    ctl = PolicyController(bundle, spec)
    names, q = list(spec.joint_names), spec.array("default")
    dt, modes, actions = ctl.dt, [], []
    for k in range(int(round(seconds / dt))):
        now = k * dt
        ctl.builder.set_joint_state(names, q, np.zeros(len(names)), arrival=now)
        if goal_until is not None and now < goal_until:
            ctl.builder.set_goal([0.5, 0.0, 0.3], now)
        if not ctl.started and not ctl.start(now):
            modes.append("waiting")
            continue
        out = ctl.step(now)
        modes.append(out.cmd.mode)
        actions.append(out.policy_action)
    return ctl, modes, actions


def test_a_policy_that_reads_no_goal_takes_control_and_the_command_watchdog_stays_armed(vision_bundle):
    spec = load_robot("panda")
    assert spec.command_inputs == ("goal",)  # the robot declares a goal topic; this policy does not read it
    ramp = spec.safety.startup_ramp_time + spec.safety.fade_in_time
    ctl, modes, actions = _run_controller(vision_bundle, ramp + 1.0, images=True)
    assert ctl.builder.command_inputs == ()
    assert modes[0] == "startup_ramp" and modes[-1] == "policy", modes[-5:]
    assert modes.count("policy") >= 0.8 / ctl.dt  # in control for the last second, never held
    assert "hold" not in modes and "watchdog" not in {k for k, v in ctl.chain.report().items() if v["count"]}
    assert np.abs(actions[-1]).max() > 0.01  # the policy's own actions drive it
    # still armed: a stale human action (teleop) holds this policy's robot too
    now = len(modes) * ctl.dt
    ctl.builder.set_joint_state(spec.joint_names, spec.array("default"), np.zeros(7), arrival=now)
    out = ctl.step(now, human=(np.zeros(7), None))
    assert out.cmd.mode == "hold"


def test_a_policy_that_reads_the_goal_is_held_until_it_arrives_and_when_it_goes_stale(goal_bundle):
    spec = load_robot("panda")
    ramp = spec.safety.startup_ramp_time + spec.safety.fade_in_time
    ctl, modes, _ = _run_controller(goal_bundle, ramp + 1.0, goal_until=None)
    assert ctl.builder.command_inputs == ("goal",)
    assert "policy" not in modes and modes[-1] == "hold", modes[-5:]  # never a goal: never in control
    timeout = ctl.limits.watchdog.command
    ctl, modes, _ = _run_controller(goal_bundle, ramp + 2.0, goal_until=ramp + 0.5)
    assert "policy" in modes
    stale_from = int(round((ramp + 0.5 + timeout) / ctl.dt)) + 2
    assert modes[stale_from:] and set(modes[stale_from:]) == {"hold"}, modes[stale_from:]


def test_sim2sim_in_process_puts_a_reach_vision_bundle_in_control(vision_bundle):
    from roboreal.sim2real.sim2sim import evaluate_deployment

    result = evaluate_deployment(load_bundle(vision_bundle, robot="panda"), 1, seed=0)
    assert result["not_in_control_at_start"] == 0 and not result["faults"]
    # the startup ramp before the episode counts too: measured 0.37 (44 of 120 steps), 0.0 while
    # the goal watchdog held a policy that reads no goal
    assert result["policy_mode_fraction"] > 0.3
    assert set(result["interventions"]) == {"startup_ramp"}, result["interventions"]


# ----------------------------------------------------------------------------- the sim bridge
@pytest.fixture
def node_context():
    from ros_helpers import in_process_context

    with in_process_context(171) as ctx:
        yield ctx


def _frames(bridge) -> dict[str, np.ndarray]:
    """Render one due frame through the bridge's camera path; the (3, H, W) images it queued."""
    from sensor_msgs.msg import Image

    with bridge.lock:
        bridge.outbox.clear()
        bridge.cameras.next_frame = 0.0
        frame = bridge.cameras.due(time.monotonic())
    bridge.cameras.publish(*frame)
    out = {}
    for _, _, msg in bridge.outbox:
        if isinstance(msg, Image) and msg.encoding == "rgb8":
            cam = msg.header.frame_id.removesuffix("_optical_frame")
            out[cam] = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3).transpose(2, 0, 1)
    return out


def _green(img: np.ndarray) -> np.ndarray:
    r, g, b = img[:3].astype(int)
    return (g - np.maximum(r, b)) > 50


@pytest.mark.ros
def test_the_sim_bridge_draws_the_goal_marker_where_the_goal_is_heard_as_training_drew_it(
        vision_bundle, reach_vision_env, node_context):
    from geometry_msgs.msg import PoseStamped
    from rclpy.parameter import Parameter

    from roboreal.sim2real.nodes.sim_bridge import SimBridge

    env = reach_vision_env
    bridge = SimBridge(context=node_context, parameter_overrides=[Parameter("robot", value="panda"),
                                                                  Parameter("bundle", value=str(vision_bundle))])
    try:
        env.reset(seed=2)
        goal = env.base_pos + torch.tensor([0.55, 0.15, 0.25])
        env.goal[0] = goal
        obs = env._compute_observations()
        bridge.sim.data.qpos[:] = env.sim.data_for(0).qpos
        assert "drawing the goal marker(s) at the goal heard on /goal_pose" in bridge.cameras.describe()

        before = _frames(bridge)  # no goal heard yet: no marker anywhere
        assert set(before) == set(CAMERAS) and not _green(before["overview"]).any()

        msg = PoseStamped()
        msg.header.frame_id = "world"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
        bridge.cameras._on_goal(msg)  # what the goal subscription calls
        after = _frames(bridge)
        green = _green(after["overview"])
        assert green.sum() >= 8, green.sum()
        # the marker is where the training env draws it, the same size and colour: the same pixels
        for cam in CAMERAS:
            np.testing.assert_array_equal(after[cam], obs[cam][0].numpy(), err_msg=cam)
    finally:
        bridge.cameras.close()
        bridge.destroy_node()


# ----------------------------------------------------------------------------- over DDS
@pytest.mark.ros
@pytest.mark.timeout(150)
def test_a_reach_vision_bundle_takes_control_over_dds(vision_bundle, tmp_path):
    """The sim bridge draws the goal the test publishes; the policy node, with no goal input,
    leaves the startup ramp for policy mode and its commands flow."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from image_helpers import publish_goals
    from ros_helpers import Probe, Process, domain_id, ros_env, wait_for

    spec = load_robot("panda")
    domain = domain_id(172)
    env = ros_env(domain)
    bridge = Process([sys.executable, "-m", "roboreal", "sim-bridge", "--robot", "panda", "--ros-args",
                      "-p", f"bundle:={vision_bundle}"], env, log=tmp_path / "bridge.log")
    node = Process([sys.executable, "-m", "roboreal.sim2real.nodes.deploy_cli", "deploy", str(vision_bundle),
                    "--robot", "panda"], env, log=tmp_path / "node.log", stop_timeout=8.0)
    probe = Probe(domain)
    try:
        commands = probe.listen(Float64MultiArray, spec.ros.joint_commands)
        actions = probe.listen(Float64MultiArray, "/policy_node/policy_action")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        mode = probe.listen(String, "/policy_node/mode", latched)
        publish_goals(probe, spec.ros.goal, position=(0.55, 0.15, 0.25))
        ramp = spec.safety.startup_ramp_time + spec.safety.fade_in_time
        wait_for(lambda: mode.msgs and mode.msgs[-1].data == "policy", 60 + ramp, "policy mode", node)
        t_policy = time.monotonic()
        wait_for(lambda: len(actions.since(t_policy)) >= 5 and len(commands.since(t_policy)) >= 5, 5,
                 "policy actions and commands", node)
        time.sleep(1.0)
        assert mode.msgs[-1].data == "policy"  # stays in control (no goal watchdog on this policy)
    finally:
        probe.close()
        rc_node = node.stop()
        rc_bridge = bridge.stop()
    assert rc_node == 0, node.output
    assert rc_bridge == 0, bridge.output
    assert "drawing the goal marker(s) at the goal heard on /goal_pose" in bridge.output
