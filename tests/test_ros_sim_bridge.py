"""The simulated robot over ROS 2 (`roboreal sim-bridge`), over real DDS on loopback.

Each bridge runs in a subprocess through the CLI, on its own ROS_DOMAIN_ID with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (nothing leaves this host); a test node in this
process subscribes and commands. The first tests drive `SimRobot` directly (no ROS).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

from roboreal.robots.spec import load_robot
from roboreal.sim2real.nodes.sim_robot import SimRobot, TrajectoryFollower
from ros_helpers import Probe, Process, domain_id, in_process_context, ros_env, wait_first_message, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")


# ----------------------------------------------------------------------------------------
# SimRobot without ROS
# ----------------------------------------------------------------------------------------
def test_sim_robot_holds_default_pose_and_tracks_position_targets():
    spec = load_robot("panda")
    sim = SimRobot(spec)
    default = spec.array("default")
    sim.step(200)  # 1 s, no command: holds the default pose
    assert np.allclose(sim.actuated_positions(), default, atol=0.01)
    pos, vel, eff = sim.joint_state()
    assert sim.joint_names == spec.joint_names + ["panda_finger_joint1", "panda_finger_joint2"]
    assert pos.shape == vel.shape == eff.shape == (9,)
    target = default + np.array([0.3, 0.2, -0.2, 0.3, 0.3, -0.3, 0.4])
    sim.set_targets(target)
    sim.set_gripper(0.0)
    sim.step(300)
    assert np.allclose(sim.actuated_positions(), target, atol=0.02)
    assert np.all(sim.joint_state()[0][7:] < 0.005)  # fingers closed
    with pytest.raises(ValueError, match="expected 7 values"):
        sim.set_targets(target[:3])
    with pytest.raises(ValueError, match="NaN"):
        sim.set_targets(np.full(7, np.nan))
    sim.set_targets(np.full(7, 100.0))  # clipped to the joint limits
    assert np.all(sim.targets <= spec.upper + 1e-9)
    sim.reset()
    assert np.allclose(sim.actuated_positions(), default) and np.allclose(sim.targets, default)


def test_sim_robot_quadruped_imu_and_force_robot_efforts():
    go1 = SimRobot(load_robot("go1"), initial_pose="home")
    go1.step(200)
    imu = go1.imu()
    w, x, y, z = imu.orientation_wxyz
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    assert abs(roll) < 0.05 and abs(pitch) < 0.05  # standing upright
    assert imu.linear_acceleration[2] == pytest.approx(9.81, abs=0.3)  # gravity reaction, like a real IMU

    cart = SimRobot(load_robot("cartpole"))
    assert np.allclose(cart.targets, 0.0)  # zero force until commanded
    cart.set_targets([50.0])  # clipped to the 10 N torque limit
    assert cart.targets[0] == 10.0
    cart.step(50)
    pos, vel, eff = cart.joint_state()
    assert pos[0] > 0.05 and vel[0] > 0 and eff[0] == pytest.approx(10.0)
    with pytest.raises(Exception, match="keyframe"):
        SimRobot(load_robot("go1"), initial_pose="nope")


def _joint_addr(sim: SimRobot, name: str) -> tuple[int, int]:
    import mujoco

    jid = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_JOINT, name)
    return int(sim.model.jnt_qposadr[jid]), int(sim.model.jnt_dofadr[jid])


def test_sim_robot_gains_sent_with_the_targets():
    """position_gains at the SimRobot level: kp = 0 with kd > 0 only damps (a displaced,
    moving joint is not pulled back); the spec's gains pull it back; the actuator force is
    kp (target - q) - kd dq for the gains sent; reset() restores the model's gains."""
    import mujoco

    spec = load_robot("panda")
    sim = SimRobot(spec)
    default, kp0, kd0 = spec.array("default"), spec.array("kp"), spec.array("kd")
    assert sim.gains_settable
    assert np.allclose(sim.gains[0], kp0) and np.allclose(sim.gains[1], kd0)  # the MJCF servos carry the spec's
    j = 3  # the elbow
    qa, va = _joint_addr(sim, spec.joint_names[j])

    # kp = 0, kd > 0: displaced by 0.3 rad and moving away at 0.5 rad/s, the joint is damped to
    # rest further away, never pulled back towards its target.
    sim.data.qpos[qa] += 0.3
    sim.data.qvel[va] = 0.5
    mujoco.mj_forward(sim.model, sim.data)
    sim.set_targets(default, kp=np.zeros(7), kd=kd0)
    assert np.allclose(sim.gains[0], 0.0) and np.allclose(sim.gains[1], kd0)
    sim.step(200)  # 1 s
    err = sim.actuated_positions() - default
    assert err[j] > 0.3 and abs(sim.joint_state()[1][j]) < 0.01, (err, sim.joint_state()[1])
    assert np.allclose(np.delete(err, j), 0.0, atol=0.02)  # the others barely move (coupling; gravcomp)
    # The spec's gains: pulled back onto the target.
    sim.set_targets(default, kp=kp0, kd=kd0)
    sim.step(200)
    assert np.allclose(sim.actuated_positions(), default, atol=0.01)

    # The force the servo applies is kp (target - q) - kd dq with the gains sent (inside the
    # force range: no clipping), measured in the step right after the command.
    kp, kd = 0.5 * kp0 + 7.0, 0.3 * kd0 + 1.0
    target = default.copy()
    target[j] += 0.05
    sim.data.qvel[va] = -0.2
    mujoco.mj_forward(sim.model, sim.data)
    q, dq = sim.actuated_positions(), sim.joint_state()[1][:7]
    sim.set_targets(target, kp=kp, kd=kd)
    sim.step(1)
    expected = kp * (target - q) - kd * dq
    assert abs(expected[j]) > 10 and np.all(np.abs(expected) < sim.model.actuator_forcerange[sim._act, 1])
    np.testing.assert_allclose(sim.data.actuator_force[sim._act], expected, rtol=1e-9, atol=1e-9)

    # Bad gains change nothing (targets included); targets alone keep the gains.
    for bad_kp, bad_kd in ((-kp, kd), (kp, np.full(7, np.nan)), (kp[:3], kd)):
        with pytest.raises(ValueError):
            sim.set_targets(default, kp=bad_kp, kd=bad_kd)
    assert np.allclose(sim.targets, target) and np.allclose(sim.gains[0], kp) and np.allclose(sim.gains[1], kd)
    sim.set_targets(default)
    assert np.allclose(sim.gains[0], kp)
    sim.reset()  # the model's gains again
    assert np.allclose(sim.gains[0], kp0) and np.allclose(sim.gains[1], kd0)
    assert np.allclose(sim.model.actuator_biasprm[sim._act, 1], -kp0)

    go1 = SimRobot(load_robot("go1"))  # 12 <position> servos, kp 30 / kv 0.8
    assert go1.gains_settable and np.allclose(go1.gains[0], 30.0) and np.allclose(go1.gains[1], 0.8)
    cart = SimRobot(load_robot("cartpole"))  # a force robot: no servo gains
    with pytest.raises(ValueError, match="position servos"):
        cart.set_gains([1.0], [0.0])


def test_trajectory_follower_interpolates_then_holds():
    f = TrajectoryFollower(start=np.array([0.0, 1.0, 2.0]), joint_index=np.array([2, 0]),
                           times=np.array([1.0, 2.0]), positions=np.array([[4.0, 1.0], [6.0, 3.0]]), t0=10.0)
    assert np.allclose(f.targets(10.0), [0.0, 1.0, 2.0])
    assert np.allclose(f.targets(10.5), [0.5, 1.0, 3.0])  # halfway to the first point
    assert np.allclose(f.targets(11.5), [2.0, 1.0, 5.0])
    assert np.allclose(f.targets(20.0), [3.0, 1.0, 6.0]) and f.done(20.0)  # holds the last point
    jump = TrajectoryFollower(np.zeros(2), np.array([0]), np.array([0.0]), np.array([[1.0]]), t0=0.0)
    assert np.allclose(jump.targets(0.0), [1.0, 0.0])


def test_randomization_is_the_training_randomizer_seeded():
    spec = load_robot("go1")
    a = SimRobot(spec, randomization="mild", seed=3)
    b = SimRobot(spec, randomization="mild", seed=3)
    c = SimRobot(spec, randomization="mild", seed=4)
    assert a.randomization == b.randomization != c.randomization
    assert set(a.randomization) == {"friction", "mass_scale"}
    assert 0.6 <= a.randomization["friction"][0] <= 1.1 and 0.9 <= a.randomization["mass_scale"][0] <= 1.1
    # what was sampled is what the model simulates (the envs' Randomizer wrote it)
    nominal = SimRobot(spec)
    assert np.allclose(a.model.geom_friction[:, 0], a.randomization["friction"][0])
    scale = a.model.body_mass[1:] / np.where(nominal.model.body_mass[1:] > 0, nominal.model.body_mass[1:], 1)
    assert np.allclose(scale[nominal.model.body_mass[1:] > 0], a.randomization["mass_scale"][0])
    # heavy also scales the servos: the gains SimRobot applies (and restores on reset) are the randomized ones
    h = SimRobot(spec, randomization="heavy", seed=5)
    kp_scale = h.randomization["kp_scale"][0] * h.randomization["motor_strength"][0]
    assert np.allclose(h.gains[0], spec.array("kp") * kp_scale, rtol=1e-6)
    h.reset()
    assert np.allclose(h.gains[0], spec.array("kp") * kp_scale, rtol=1e-6)
    # a floor range below the feet's friction (1.0) is the feet's contact friction, as in training
    from roboreal.envs.randomization import RandomizationCfg, RangeTerm
    slippery = SimRobot(spec, randomization=RandomizationCfg(friction=RangeTerm(range=(0.3, 0.3), targets=("@floor",))))
    slippery.step(20)
    d = slippery.data
    floor = slippery.model.geom("floor").id
    on_floor = [c for c in d.contact[:d.ncon] if floor in (c.geom1, c.geom2)]
    assert on_floor and all(abs(c.friction[0] - 0.3) < 1e-6 for c in on_floor)


# ----------------------------------------------------------------------------------------
# Over DDS
# ----------------------------------------------------------------------------------------
@contextmanager
def running_bridge(robot: str, domain: int, node_name: str, *extra: str):
    bridge = Process([sys.executable, "-m", "roboreal", "sim-bridge", "--robot", robot, *extra,
                      "--ros-args", "-r", f"__node:={node_name}"], ros_env(domain))
    probe = None
    try:
        probe = Probe(domain)
        yield bridge, probe
    finally:
        if probe is not None:
            probe.close()
        rc = bridge.stop()
        assert rc == 0, f"sim bridge exited with {rc}:\n{bridge.output}"


@pytest.mark.ros
def test_sim_robot_launch_file_runs_the_bridge(tmp_path):
    """launch/sim_robot.launch.xml through `roboreal launch`: the bridge comes up with the
    robot's defaults and the launch arguments; Ctrl-C stops it cleanly."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    domain = domain_id(50)
    runner = Process([sys.executable, "-m", "roboreal", "launch", "sim_robot.launch.xml",
                      "robot:=cartpole", "node_name:=launched_bridge"], ros_env(domain))
    probe = None
    try:
        probe = Probe(domain)
        js = probe.listen(JointState, "/joint_states", qos_profile_sensor_data)
        wait_first_message(js, runner, "JointState from the launched bridge")
        assert list(js.msgs[-1].name) == ["slider", "hinge"]
    finally:
        if probe is not None:
            probe.close()
        rc = runner.stop()
    assert rc == 0, runner.output
    assert "[launched_bridge]" in runner.output and "simulating cartpole" in runner.output
    assert "publishing 100 Hz" in runner.output  # derived: the physics rate, 1 / the model's 0.01 s timestep


@pytest.fixture
def node_context():
    """An rclpy context (no DDS traffic needed) for SimBridge nodes built in this process."""
    with in_process_context(150) as ctx:
        yield ctx


def _bridge_node(ctx, **params):
    from rclpy.parameter import Parameter

    from roboreal.sim2real.nodes.sim_bridge import SimBridge

    return SimBridge(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.mark.ros
def test_bridge_node_joint_trajectory_interface(node_context):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    node = _bridge_node(node_context, robot="panda", command_interface="joint_trajectory", publish_rate=100)
    try:
        default = node.spec.array("default")
        msg = JointTrajectory(joint_names=["panda_joint7", "panda_joint1"], points=[
            JointTrajectoryPoint(positions=[1.2, 0.4], time_from_start=Duration(sec=1))])
        node._on_trajectory(msg)
        node._apply_due_commands(time.monotonic() + 1)
        node.sim.step(100)  # 0.5 s: halfway along the interpolation
        node._apply_due_commands(time.monotonic() + 1)
        expected = default.copy()
        expected[[6, 0]] = default[[6, 0]] + 0.5 * (np.array([1.2, 0.4]) - default[[6, 0]])
        assert np.allclose(node.sim.targets, expected, atol=0.02)
        node.sim.step(120)
        node._apply_due_commands(time.monotonic() + 1)
        expected[[6, 0]] = [1.2, 0.4]  # then holds the last point; the other joints keep their targets
        assert np.allclose(node.sim.targets, expected)
        n = node.stats["ignored"]
        node._on_trajectory(JointTrajectory(joint_names=["elbow"], points=[JointTrajectoryPoint(positions=[1.0])]))
        node._on_trajectory(JointTrajectory(joint_names=["panda_joint1"], points=[JointTrajectoryPoint(positions=[])]))
        assert node.stats["ignored"] == n + 2 and not node.pending_commands
    finally:
        node.destroy_node()


def _gains_msg(q, kp, kd, labelled: bool = True):
    """A position_gains command: [positions, kp, kd], layout "interface" (3) x "joint" (N)."""
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension, MultiArrayLayout

    data = np.concatenate([np.asarray(q, float), np.asarray(kp, float), np.asarray(kd, float)])
    n = len(q)
    layout = MultiArrayLayout(dim=[MultiArrayDimension(label="interface", size=3, stride=3 * n),
                                   MultiArrayDimension(label="joint", size=n, stride=n)]) if labelled \
        else MultiArrayLayout()
    return Float64MultiArray(layout=layout, data=data.tolist())


@pytest.mark.ros
def test_bridge_node_position_gains_interface(node_context):
    """command_interface position_gains: each valid command sets the targets and the servo
    gains; wrong length / NaN / negative gain: ignored whole; ~/reset restores the model's gains."""
    from std_srvs.srv import Trigger

    from roboreal.config import ConfigError

    node = _bridge_node(node_context, robot="go1", command_interface="position_gains")
    try:
        spec, n = node.spec, 12
        kp0, kd0 = spec.array("kp"), spec.array("kd")
        q = spec.array("default") + 0.1
        kp, kd = np.linspace(5.0, 40.0, n), np.linspace(0.1, 1.2, n)
        node._on_position_gains(_gains_msg(q, kp, kd))
        node._apply_due_commands(time.monotonic() + 1)
        assert np.allclose(node.sim.targets, q)
        assert np.allclose(node.sim.gains[0], kp) and np.allclose(node.sim.gains[1], kd)
        ignored = node.stats["ignored"]
        bad_kd = kd.copy()
        bad_kd[4] = -0.1
        nan_kp = kp.copy()
        nan_kp[0] = np.nan
        for msg in (_gains_msg(q[:6], kp[:6], kd[:6]), _gains_msg(q, kp, kd[:11]), _gains_msg(q, nan_kp, kd),
                    _gains_msg(q, -kp, kd), _gains_msg(q, kp, bad_kd), _gains_msg(q + np.inf, kp, kd)):
            node._on_position_gains(msg)
        assert node.stats["ignored"] == ignored + 6 and not node.pending_commands
        node._on_position_gains(_gains_msg(q - 0.2, np.zeros(n), kd0, labelled=False))  # any layout: only 3N counts
        node._apply_due_commands(time.monotonic() + 1)
        assert np.allclose(node.sim.targets, q - 0.2) and np.allclose(node.sim.gains[0], 0.0)
        node._on_reset(Trigger.Request(), Trigger.Response())
        assert np.allclose(node.sim.gains[0], kp0) and np.allclose(node.sim.gains[1], kd0)
    finally:
        node.destroy_node()
    with pytest.raises(ConfigError, match="position_gains needs a position-controlled robot"):
        _bridge_node(node_context, robot="cartpole", command_interface="position_gains")


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_go1_bridge_applies_position_gains_over_dds():
    """`roboreal sim-bridge --robot go1 -p command_interface:=position_gains` over DDS: the
    servos carry the standing robot; malformed commands that would switch them off are
    ignored with a warning; kp = kd = 0 makes every joint effort exactly 0 (a limp robot);
    the spec's gains bring the efforts back."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    spec = load_robot("go1")
    default = spec.array("default")
    kp0, kd0, zeros = spec.array("kp"), spec.array("kd"), np.zeros(12)
    with running_bridge("go1", domain_id(75), "gains_bridge",
                        "--ros-args", "-p", "command_interface:=position_gains") as (bridge, probe):
        js = probe.listen(JointState, "/joint_states", qos_profile_sensor_data)
        wait_first_message(js, bridge, "JointState")
        assert "commands (position_gains, positions, kp, kd)" in bridge.output
        pub = probe.node.create_publisher(Float64MultiArray, spec.ros.joint_commands, 10)
        assert wait_until(lambda: pub.get_subscription_count() > 0, 10.0)

        def effort() -> np.ndarray:
            return np.abs(np.array(js.msgs[-1].effort))

        time.sleep(0.3)
        assert effort().max() > 0.5, effort()  # standing: the servos carry the 13 kg robot
        neg = zeros.copy()
        neg[3] = -1.0
        nan = zeros.copy()
        nan[7] = np.nan
        # Each malformed kind once, 1.1 s apart (the warning is throttled to one a second).
        for msg in (Float64MultiArray(data=np.concatenate([default, zeros]).tolist()),  # 24 values, not 36
                    _gains_msg(default, zeros, nan), _gains_msg(default, zeros, neg)):
            pub.publish(msg)
            time.sleep(1.1)
            assert effort().max() > 0.5, "a malformed command was applied"
        out = bridge.output
        assert out.count("ignoring command") >= 3, out
        assert "has 24 values, expected 36" in out and "NaN or inf" in out and "negative gain" in out, out

        pub.publish(_gains_msg(default, zeros, zeros))  # valid: no servo force at all
        assert wait_until(lambda: np.all(effort() == 0.0), 2.0), effort()
        pub.publish(_gains_msg(default, kp0, kd0 + neg))  # malformed (a negative kd): still limp
        time.sleep(0.3)
        assert np.all(effort() == 0.0), effort()
        pub.publish(_gains_msg(default, kp0, kd0))  # the spec's gains again
        assert wait_until(lambda: effort().max() > 0.5, 2.0), effort()


@pytest.mark.ros
def test_bridge_node_parameters_are_checked(node_context):
    from roboreal.config import ConfigError

    with pytest.raises(ConfigError, match="robot: not set"):
        _bridge_node(node_context)
    with pytest.raises(ConfigError, match="joint_trajectory needs a position-controlled robot"):
        _bridge_node(node_context, robot="cartpole", command_interface="joint_trajectory")
    with pytest.raises(ConfigError, match="publish_rate"):
        _bridge_node(node_context, robot="cartpole", publish_rate="fast")
    node = _bridge_node(node_context, robot="go1", publish_rate=500, latency=0.02)  # ints are fine for floats
    try:
        assert node.publish_rate == 500.0 and node.latency == 0.02
        assert node.sim.initial_pose == "home"  # derived: the model's home keyframe (sim2real/nodes/params.py)
    finally:
        node.destroy_node()


@pytest.fixture(scope="class")
def go1_bridge():
    with running_bridge("go1", domain_id(0), "go1_bridge", "--rate", "200") as (bridge, probe):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Imu, JointState

        js = probe.listen(JointState, "/joint_states", qos_profile_sensor_data)
        imu = probe.listen(Imu, "/imu/data", qos_profile_sensor_data)
        wait_first_message(js, bridge, "JointState")
        yield bridge, probe, js, imu


@pytest.fixture(scope="class")
def panda_bridge():
    with running_bridge("panda", domain_id(100), "panda_bridge", "--rate", "250") as (bridge, probe):
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        js = probe.listen(JointState, "/joint_states", qos_profile_sensor_data)
        ee = probe.listen(PoseStamped, "/panda_bridge/ee_pose", qos_profile_sensor_data)
        obj = probe.listen(PoseStamped, "/object_pose", qos_profile_sensor_data)
        wait_first_message(js, bridge, "JointState")
        yield bridge, probe, js, ee, obj


@pytest.mark.ros
class TestGo1Bridge:
    """One go1 bridge (200 Hz) for these tests, stopped after them."""

    def test_go1_joint_states_at_the_requested_rate_holding_default_pose(self, go1_bridge):
        bridge, probe, js, _ = go1_bridge
        spec = load_robot("go1")
        time.sleep(0.3)
        t0 = time.monotonic()
        time.sleep(1.5)
        n = len(js.since(t0))
        assert 0.6 * 200 * 1.5 <= n <= 1.2 * 200 * 1.5, f"{n} JointStates in 1.5 s at 200 Hz requested"
        msg = js.msgs[-1]
        assert list(msg.name) == spec.joint_names
        assert len(msg.position) == len(msg.velocity) == len(msg.effort) == 12
        # No command was sent: the servos hold the default pose (the calves sag a little under the robot's weight).
        assert np.allclose(msg.position, spec.array("default"), atol=0.3)
        assert np.all(np.abs(msg.velocity) < 0.5)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in js.msgs[-50:]]
        assert np.all(np.diff(stamps) > 0)

    def test_go1_imu_says_upright_while_standing(self, go1_bridge):
        bridge, probe, _, imu = go1_bridge
        assert wait_until(lambda: len(imu.msgs) > 20, 5.0), bridge.output
        m = imu.msgs[-1]
        q = m.orientation
        roll = math.atan2(2 * (q.w * q.x + q.y * q.z), 1 - 2 * (q.x ** 2 + q.y ** 2))
        pitch = math.asin(max(-1.0, min(1.0, 2 * (q.w * q.y - q.z * q.x))))
        assert abs(roll) < 0.1 and abs(pitch) < 0.1, (roll, pitch)
        assert m.linear_acceleration.z == pytest.approx(9.81, abs=0.6)
        assert abs(m.angular_velocity.x) + abs(m.angular_velocity.y) + abs(m.angular_velocity.z) < 0.3
        assert m.header.frame_id == "imu"


@pytest.mark.ros
class TestPandaBridge:
    """One panda bridge (250 Hz) for these tests, stopped after them."""

    def test_panda_position_command_moves_joints_then_reset(self, panda_bridge):
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import Trigger

        bridge, probe, js, ee, obj = panda_bridge
        spec = load_robot("panda")
        default = spec.array("default")

        def arm() -> np.ndarray:
            return np.array(js.msgs[-1].position[:7])

        # Before any command: the default pose is held, the fingers open.
        time.sleep(0.3)
        assert list(js.msgs[-1].name) == spec.joint_names + ["panda_finger_joint1", "panda_finger_joint2"]
        assert np.allclose(arm(), default, atol=0.02)
        assert wait_until(lambda: ee.msgs, 3.0), "no ~/ee_pose"
        assert ee.msgs[-1].header.frame_id == "world" and ee.msgs[-1].pose.position.z > 0.1
        # The cube, as an object tracker would report it: resting in the bin at (0.5, 0, 0.02).
        assert wait_until(lambda: obj.msgs, 3.0), "no /object_pose"
        cube = obj.msgs[-1]
        assert cube.header.frame_id == "world"
        assert [cube.pose.position.x, cube.pose.position.y] == pytest.approx([0.5, 0.0], abs=0.01)
        assert 0.0 < cube.pose.position.z < 0.05

        pub = probe.node.create_publisher(Float64MultiArray, spec.ros.joint_commands, 10)
        grip = probe.node.create_publisher(Float64MultiArray, spec.ros.gripper_commands, 10)
        assert wait_until(lambda: pub.get_subscription_count() > 0 and grip.get_subscription_count() > 0, 10.0)

        # A command of the wrong length is ignored (with a warning).
        pub.publish(Float64MultiArray(data=[0.5, 0.5, 0.5]))
        time.sleep(0.4)
        assert np.allclose(arm(), default, atol=0.02)

        target = default + np.array([0.3, 0.2, -0.2, 0.3, 0.3, -0.3, 0.4])
        pub.publish(Float64MultiArray(data=target.tolist()))
        grip.publish(Float64MultiArray(data=[0.01]))
        assert wait_until(lambda: np.allclose(arm(), target, atol=0.03), 3.0), \
            f"joints {arm()} did not reach {target}"
        assert wait_until(lambda: np.allclose(js.msgs[-1].position[7:], 0.01, atol=0.003), 2.0)
        assert "ignoring command" in bridge.output and "has 3 values, expected 7" in bridge.output

        client = probe.node.create_client(Trigger, "/panda_bridge/reset")
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        assert wait_until(future.done, 5.0)
        assert future.result().success
        n = len(js.msgs)
        assert wait_until(lambda: len(js.msgs) > n + 5, 2.0)
        assert np.allclose(arm(), default, atol=0.02)  # back at the initial pose, and holding it
        assert np.allclose(js.msgs[-1].position[7:], spec.gripper.open, atol=0.003)
        time.sleep(0.5)
        assert np.allclose(arm(), default, atol=0.02)
