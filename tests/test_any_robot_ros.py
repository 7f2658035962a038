"""Bring your own robot, over ROS 2: a third-party robot.yaml + MJCF, given by path, with no
YAML or Python of its own, gets every node's defaults (from its kind, its robot.yaml, its model
and its bundle's manifest), runs in the launch files, and its bundle records where it is.

The ROS tests start `roboreal launch` as a subprocess on their own ROS_DOMAIN_ID with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, and probe the topics from this process.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from roboreal.config import ConfigError
from roboreal.robots.spec import ROBOTS_DIR, load_robot
from roboreal.sim2real.launching import PACKAGE_DIR, plan_launch
from roboreal.sim2real.nodes import params
from roboreal.sim2real.nodes.params import (config_files, default_parameters, derived_parameters, package_robot,
                                            read_params_file)

CONFIG = PACKAGE_DIR / "sim2real" / "nodes" / "config"
LAUNCH = PACKAGE_DIR / "launch"
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")


def third_party(folder: Path, robot: str = "go1", model_edit=None, **fields) -> Path:
    """A copy of robots/<robot> (robot.yaml + model.xml) in `folder`, robot.yaml's top-level
    `fields` replaced (``ros`` merged); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = (ROBOTS_DIR / robot / "model.xml").read_text()
    (folder / "model.xml").write_text(model_edit(xml) if model_edit else xml)
    data = yaml.safe_load((ROBOTS_DIR / robot / "robot.yaml").read_text())
    for key, value in fields.items():
        data[key] = {**data[key], **value} if key == "ros" else value
    (folder / "robot.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


# ----------------------------------------------------------------------------------------
# Node defaults (no ROS)
# ----------------------------------------------------------------------------------------
def test_only_roboreal_own_robots_get_their_per_robot_file(tmp_path, monkeypatch):
    """A per-robot params file applies to roboreal's own robot of that name (by name or by its
    path), never to a user's robot in a folder that happens to have the same name."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "policy_node_go1.yaml").write_text("/**:\n  ros__parameters:\n    realtime_priority: 7\n")
    monkeypatch.setattr(params, "CONFIG_DIR", config)
    copy = third_party(tmp_path / "elsewhere" / "go1")  # the very same robot.yaml and MJCF, named go1 too
    assert load_robot(str(copy)).name == "go1"

    for ref in ("go1", str(ROBOTS_DIR / "go1"), str(ROBOTS_DIR / "go1" / "robot.yaml")):
        assert package_robot(ref) == "go1"
        assert config_files("policy_node", ref) == [config / "policy_node_quadruped.yaml", config / "policy_node_go1.yaml"]
        assert default_parameters("policy_node", ref)["realtime_priority"] == 7
    for ref in (str(copy), str(copy / "robot.yaml")):
        assert package_robot(ref) is None
        assert config_files("policy_node", ref) == [config / "policy_node_quadruped.yaml"]  # the kind's only
        assert default_parameters("policy_node", ref)["realtime_priority"] == 50

    # the shipped files: panda's sim bridge starts at robot.yaml's default pose; a copy of
    # panda in a folder named panda gets what every robot gets (the home keyframe)
    monkeypatch.setattr(params, "CONFIG_DIR", CONFIG)
    assert config_files("sim_bridge", "panda") == [CONFIG / "sim_bridge_panda.yaml"]
    assert default_parameters("sim_bridge", "panda")["initial_pose"] == "default"
    panda = third_party(tmp_path / "mine" / "panda", "panda")
    assert config_files("sim_bridge", str(panda)) == []
    assert default_parameters("sim_bridge", str(panda)) == {"publish_rate": 200.0, "initial_pose": "home"}


def test_policy_node_and_teleop_defaults_by_robot_kind(tmp_path):
    quadruped = third_party(tmp_path / "dog", name="dog")
    arm = third_party(tmp_path / "arm", "panda", name="arm")
    cart = third_party(tmp_path / "cart", "cartpole", name="cart")
    for node in ("policy_node", "teleop"):
        for folder, kind in ((quadruped, "quadruped"), (arm, "manipulator"), (cart, "cartpole")):
            assert config_files(node, str(folder)) == [CONFIG / f"{node}_{kind}.yaml"]
            assert default_parameters(node, str(folder)) == read_params_file(CONFIG / f"{node}_{kind}.yaml")
    assert default_parameters("teleop", str(arm))["action_axes"] == [0, 1, 3, 4]  # sticks drive joints 1-4
    assert default_parameters("teleop", str(quadruped))["cmd_vel_topic"] == ""  # "": robot.yaml's ros.cmd_vel
    # nested params files come flattened, as ROS names them
    nested = tmp_path / "nested.yaml"
    nested.write_text("/**:\n  ros__parameters:\n    safety:\n      watchdog: {imu: 0.05}\n")
    assert read_params_file(nested) == {"safety.watchdog.imu": 0.05}


def test_an_unknown_name_in_a_shipped_file_is_refused_naming_the_file(tmp_path, monkeypatch):
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    (config / "teleop_quadruped.yaml").write_text("/**:\n  ros__parameters:\n    max_vxx: 2.0\n")
    monkeypatch.setattr(params, "CONFIG_DIR", config)
    with pytest.raises(ConfigError, match=r"max_vxx: unknown teleop parameter in .*teleop_quadruped.yaml"):
        default_parameters("teleop", "go1", known={"max_vx"})


def test_sim_bridge_defaults_are_derived_from_robot_yaml_and_the_model(tmp_path):
    """publish_rate = 1 / physics_dt (robot.yaml's, else the MJCF's timestep); initial_pose home."""
    plain = third_party(tmp_path / "plain", name="plain")
    assert derived_parameters("sim_bridge", str(plain)) == {"publish_rate": 200.0, "initial_pose": "home"}
    fast = third_party(tmp_path / "fast", name="fast", physics_dt=0.0025)
    assert default_parameters("sim_bridge", str(fast))["publish_rate"] == pytest.approx(400.0)
    own_dt = third_party(tmp_path / "own_dt", name="own_dt",
                         model_edit=lambda xml: xml.replace('timestep="0.005"', 'timestep="0.002"'))
    assert default_parameters("sim_bridge", str(own_dt))["publish_rate"] == pytest.approx(500.0)
    assert default_parameters("sim_bridge", "cartpole")["publish_rate"] == pytest.approx(100.0)


def test_teleop_defaults_follow_the_bundle_manifest(tmp_path):
    dog = str(third_party(tmp_path / "dog", name="dog"))
    manifest = {"robot": {"name": "dog"}, "action": {"size": 12},
                "inputs": {"command": {"ranges": {"min": [-0.6, -0.3, -1.5], "max": [1.2, 0.3, 1.0]}}}}
    p = default_parameters("teleop", dog, manifest=manifest)
    assert (p["action_size"], p["max_vx"], p["max_vy"], p["max_wz"]) == (12, 1.2, 0.3, 1.5)
    assert default_parameters("teleop", dog)["max_vx"] == 1.0  # without a bundle: the kind's
    with pytest.raises(ConfigError, match="not a bundle"):
        params.read_manifest(tmp_path)


def test_every_launch_file_takes_a_robot_by_path_without_params_files(tmp_path):
    robot = third_party(tmp_path / "my robots" / "dog", name="dog") / "robot.yaml"
    bundle, out = tmp_path / "bundle", tmp_path / "session.hdf5"
    args = {"sim_robot": {}, "sim_deploy": {"bundle": bundle}, "deploy_quadruped": {"bundle": bundle},
            "deploy_manipulator": {"bundle": bundle}, "record_session": {"bundle": bundle, "out": out}}
    given = tmp_path / "mine.yaml"
    given.write_text("policy_node:\n  ros__parameters: {diagnostics_period: 2.0}\n")
    for name, extra in args.items():
        plan = plan_launch(LAUNCH / f"{name}.launch.xml", {"robot": str(robot), **{k: str(v) for k, v in extra.items()}})
        assert plan.processes
        for p in plan.processes:
            assert "--params-file" not in p.cmd, (name, p.cmd)  # the nodes take their own defaults
            if p.node_name != "recorder":
                assert f"robot:={robot}" in p.cmd, (name, p.cmd)
        plan = plan_launch(LAUNCH / f"{name}.launch.xml", {"robot": str(robot), "params_file": str(given),
                                                           **{k: str(v) for k, v in extra.items()}})
        for p in plan.processes:  # one params file for every node (sections by node name)
            assert p.cmd[p.cmd.index("--params-file") + 1] == str(given), (name, p.cmd)


def test_the_manifest_says_where_the_robot_is_and_a_mismatch_is_named(tmp_path):
    from roboreal.policy_bundle import BundleError, check_robot, load_manifest_robot, manifest_robot

    old = {"robot": {"name": "go1"}}  # bundles from before robot.source
    assert manifest_robot(old) == "go1" and manifest_robot(old, "/elsewhere/go1") == "/elsewhere/go1"
    moved = {"robot": {"name": "dog", "source": str(tmp_path / "gone" / "robot.yaml")}}
    with pytest.raises(ConfigError, match=r"robot 'dog' is not found by its manifest's robot.source .*pass --robot"):
        load_manifest_robot(moved)
    dog = third_party(tmp_path / "dog", name="dog")
    assert load_manifest_robot(moved, str(dog)).name == "dog"
    with pytest.raises(BundleError, match=r"bundle is for robot 'dog', not 'go1' \(the bundle's robot: .*gone"):
        check_robot(moved, load_robot("go1"))


def test_sim2sim_takes_robot_override():
    from roboreal.cli import build_parser

    args = build_parser("sim2sim").parse_args(["sim2sim", "BUNDLE", "--robot", "/there/robot.yaml"])
    assert args.robot == "/there/robot.yaml"


# ----------------------------------------------------------------------------------------
# Over ROS 2
# ----------------------------------------------------------------------------------------
ACME_ROS = {"joint_states": "/acme/joint_states", "imu": "/acme/imu", "cmd_vel": "/acme/cmd_vel",
            "joint_commands": "/acme/commands"}


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_sim_robot_launch_file_runs_a_third_party_robot_given_by_path(tmp_path):
    """`roboreal launch sim_robot.launch.xml robot:=/path/robot.yaml`: a copy of go1 with its own
    name, topics and physics_dt; joint states and IMU arrive on its robot.yaml's topics, at its
    physics rate, with nothing but robot.yaml + MJCF."""
    from rclpy.qos import qos_profile_sensor_data
    from ros_helpers import Probe, Process, domain_id, ros_env, wait_first_message, wait_until
    from sensor_msgs.msg import Imu, JointState

    robot = third_party(tmp_path / "acme", name="acme_dog", physics_dt=0.004, ros=ACME_ROS) / "robot.yaml"
    domain = domain_id(31)
    runner = Process([sys.executable, "-m", "roboreal", "launch", "sim_robot.launch.xml",
                      f"robot:={robot}"], ros_env(domain))
    probe = None
    try:
        probe = Probe(domain)
        js = probe.listen(JointState, "/acme/joint_states", qos_profile_sensor_data)
        imu = probe.listen(Imu, "/acme/imu", qos_profile_sensor_data)
        default_js = probe.listen(JointState, "/joint_states", qos_profile_sensor_data)
        wait_first_message(js, runner, "JointState on /acme/joint_states")
        assert wait_until(lambda: len(imu.msgs) >= 5, 5.0), f"no IMU on /acme/imu:\n{runner.output}"
        time.sleep(0.5)
        assert list(js.msgs[-1].name) == load_robot(str(robot)).joint_names
        assert 9.0 < imu.msgs[-1].linear_acceleration.z < 10.6  # standing on the floor: gravity's reaction
        assert not default_js.msgs  # robot.yaml's topics, not the defaults
    finally:
        if probe is not None:
            probe.close()
        rc = runner.stop()
    assert rc == 0, runner.output
    assert "simulating acme_dog" in runner.output and "publishing 250 Hz on /acme/joint_states, /acme/imu" \
        in runner.output, runner.output
    assert "initial pose 'home'" in runner.output


@pytest.mark.ros
@pytest.mark.timeout(150)
def test_sim_deploy_runs_a_third_party_robot_and_its_bundle(tmp_path):
    """Trained on a robot given by path, exported (the manifest records that path), then
    `roboreal launch sim_deploy.launch.xml bundle:=B robot:=FOLDER`: the policy node accepts the
    bundle, reaches policy mode and commands the simulated robot on its robot.yaml's topics."""
    from geometry_msgs.msg import Twist
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String
    from ros_helpers import Probe, Process, Received, domain_id, ros_env, wait_until
    from std_srvs.srv import Trigger

    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle
    from roboreal.sim2real.nodes.hostile import TINY_RUNS

    folder = third_party(tmp_path / "acme", name="acme_dog", ros=ACME_ROS)
    task, algo, over = TINY_RUNS["go1"]
    train(resolve_config(task, algo, {**over, "env.robot": str(folder)}, num_envs=2, total_steps=1, seed=0),
          tmp_path / "run", progress=False)
    bundle = export_bundle(tmp_path / "run")
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    assert manifest["robot"]["name"] == "acme_dog"
    assert manifest["robot"]["source"] == str((folder / "robot.yaml").resolve())

    domain = domain_id(37)
    runner = Process([sys.executable, "-m", "roboreal", "launch", "sim_deploy.launch.xml",
                      f"bundle:={bundle}", f"robot:={folder}"], ros_env(domain))
    probe = None
    try:
        probe = Probe(domain)
        modes = Received()
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        probe.node.create_subscription(String, "/policy_node/mode", modes, latched)
        commands = Received()
        probe.node.create_subscription(Float64MultiArray, "/acme/commands", commands, 10)
        cmd_vel = probe.node.create_publisher(Twist, "/acme/cmd_vel", 10)
        reset = probe.node.create_client(Trigger, "/policy_node/reset")
        seen = lambda: [m.data for m in modes.msgs]  # noqa: E731
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "policy" not in seen() and runner.proc.poll() is None:
            cmd_vel.publish(Twist())  # stand still: the command stream keeps the watchdog fed
            time.sleep(0.05)
            # A stall of a loaded 2-core machine at startup may trip the sensor watchdog (a latched
            # fault): reset the policy node then, as an operator would.
            if seen() and seen()[-1] in ("hold", "damping") and time.monotonic() - modes.times[-1] > 1.5:
                future = reset.call_async(Trigger.Request())
                wait_until(future.done, 5.0)
        assert "policy" in seen(), f"no policy mode (modes {seen()}):\n{runner.output}"
        assert commands.msgs and len(commands.msgs[-1].data) == 12
    finally:
        if probe is not None:
            probe.close()
        rc = runner.stop()
    assert rc == 0, runner.output
    assert "simulating acme_dog" in runner.output
