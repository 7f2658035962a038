"""Every node exits within 2 s of SIGINT (or SIGTERM), with status 0, and says its last words.

Each node runs as a subprocess through the `roboreal` CLI with its usual inputs flowing, over
real DDS on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, this file's own
ROS_DOMAIN_IDs); a probe node in this process feeds it and listens. The time is measured
from the signal to the process's exit (a pidfd: the moment it is gone, not a polling
interval later):

* the sim bridge (go1, panda; SIGINT and SIGTERM): just exits;
* the policy node (`roboreal deploy`, a sim bridge as the robot): a final command on the
  command topic and mode ``estop`` on ``/policy_node/mode`` after the signal;
* teleop: zero velocity on cmd_vel and ``false`` on /intervention after the signal (go1);
  no goal stamped after the signal (panda);
* the recorder: the episode running at the signal is in the HDF5 file, the MCAP complete.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import Probe, Process, domain_id, ros_env, wait_for

assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # conftest: DDS stays on loopback
pytestmark = [pytest.mark.ros,
              pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")]

LIMIT = 2.0  # s from the signal to the process's exit


def _roboreal(args: list[str], domain: int, log: Path) -> Process:
    """`python -m roboreal ARGS` in a subprocess on `domain`, output in `log`; always stopped."""
    return Process([sys.executable, "-m", "roboreal", *args], ros_env(domain), log=log, stop_timeout=5.0)


def _signal_and_time(node: Process, sig: int = signal.SIGINT, limit: float = 10.0) -> tuple[float, float]:
    """Send `sig`; returns (wall-clock time of the signal, seconds until the process was gone)."""
    fd = os.pidfd_open(node.proc.pid)
    try:
        t_wall, t0 = time.time(), time.monotonic()
        node.proc.send_signal(sig)
        ready, _, _ = select.select([fd], [], [], limit)
        elapsed = time.monotonic() - t0
    finally:
        os.close(fd)
    if not ready:
        node.proc.kill()
        elapsed = float("inf")
    node.proc.wait(5)
    return t_wall, elapsed


def _assert_fast_clean_exit(node: Process, elapsed: float, what: str) -> None:
    print(f"{what}: exited {elapsed:.3f} s after the signal, status {node.proc.returncode}")
    assert node.proc.returncode == 0, f"{what} exited with {node.proc.returncode}:\n{node.output}"
    assert elapsed <= LIMIT, f"{what} took {elapsed:.2f} s to exit after the signal (limit {LIMIT} s):\n{node.output}"


# ----------------------------------------------------------------------------------------
# sim bridge
# ----------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("robot, sig", [("go1", signal.SIGINT), ("panda", signal.SIGINT), ("go1", signal.SIGTERM)],
                         ids=["go1-SIGINT", "panda-SIGINT", "go1-SIGTERM"])
def test_sim_bridge_exits_within_2s(robot, sig, tmp_path):
    """Joint states out, commands in (some malformed, so it is logging too), a subscriber
    attached: SIGINT/SIGTERM -> gone within 2 s, status 0, its summary printed."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from roboreal.robots.spec import load_robot

    spec = load_robot(robot)
    domain = domain_id(30 + (robot == "panda") + 2 * (sig == signal.SIGTERM))
    bridge = _roboreal(["sim-bridge", "--robot", robot], domain, tmp_path / "bridge.log")
    probe = None
    try:
        probe = Probe(domain, "shutdown_probe")
        joint_states = probe.listen(JointState, spec.ros.joint_states, qos_profile_sensor_data, clock=time.time)
        pub = probe.node.create_publisher(Float64MultiArray, spec.ros.joint_commands, 10)
        default, k = spec.array("default").tolist(), [0]

        def command():
            k[0] += 1
            pub.publish(Float64MultiArray(data=default if k[0] % 10 else default[:2]))

        probe.node.create_timer(0.02, command)
        wait_for(lambda: len(joint_states.msgs) > 100, 30, "joint states", bridge)
        bridge.wait_output("first command received", 5)
        _, elapsed = _signal_and_time(bridge, sig)
    finally:
        if probe is not None:
            probe.close()
        bridge.stop()
    _assert_fast_clean_exit(bridge, elapsed, f"the {robot} sim bridge")
    assert "[sim_bridge] shutting down" in bridge.output and "did not stop" not in bridge.output


# ----------------------------------------------------------------------------------------
# policy node
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def go1_bundle(tmp_path_factory) -> Path:
    """A go1-walk bundle from a tiny training run (a valid bundle, not a good policy)."""
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle

    run = tmp_path_factory.mktemp("shutdown_run") / "go1"
    cfg = resolve_config("go1-walk", "ppo", {"num_steps": 4, "num_minibatches": 1, "num_epochs": 1},
                         num_envs=2, total_steps=1, seed=0)
    train(cfg, run, progress=False)
    return export_bundle(run)


@pytest.mark.timeout(90)
def test_policy_node_exits_within_2s_after_its_safe_command(go1_bundle, tmp_path):
    """A sim bridge as the robot, cmd_vel from the probe; SIGINT once the node commands:
    a command and mode "estop" after the signal, gone within 2 s, status 0."""
    from geometry_msgs.msg import Twist
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from roboreal.robots.spec import load_robot

    spec = load_robot("go1")
    domain = domain_id(34)
    bridge = _roboreal(["sim-bridge", "--robot", "go1"], domain, tmp_path / "bridge.log")
    policy = _roboreal(["deploy", str(go1_bundle), "--robot", "go1"], domain, tmp_path / "policy.log")
    probe = None
    try:
        probe = Probe(domain, "shutdown_probe")
        commands = probe.listen(Float64MultiArray, spec.ros.joint_commands, clock=time.time)
        modes = probe.listen(String, "/policy_node/mode", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
            clock=time.time)
        cmd_vel = probe.node.create_publisher(Twist, spec.ros.cmd_vel, 10)
        probe.node.create_timer(0.05, lambda: cmd_vel.publish(Twist()))
        wait_for(lambda: len(commands.msgs) > 20, 45, "the policy node's commands", policy)
        t_sig, elapsed = _signal_and_time(policy, signal.SIGINT)
        time.sleep(0.3)  # the probe takes what was delivered
        after_cmds = commands.since(t_sig)
        after_modes = [m.data for m in modes.since(t_sig)]
    finally:
        if probe is not None:
            probe.close()
        policy.stop()
        bridge.stop()
    _assert_fast_clean_exit(policy, elapsed, "the policy node")
    assert after_cmds, f"no command after the signal:\n{policy.output}"
    assert np.isfinite(after_cmds[-1].data).all() and len(after_cmds[-1].data) == 12
    assert after_modes and after_modes[-1] == "estop", (after_modes, policy.output)


# ----------------------------------------------------------------------------------------
# teleop
# ----------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_teleop_go1_exits_within_2s_stopping_the_robot(tmp_path):
    """The human is intervening and pushing the stick forward; SIGINT: the last Twist is zero
    and the last /intervention is false, both sent after the signal; gone within 2 s."""
    from geometry_msgs.msg import Twist
    from sensor_msgs.msg import Joy
    from std_msgs.msg import Bool

    domain = domain_id(35)
    teleop = _roboreal(["teleop", "--robot", "go1"], domain, tmp_path / "teleop.log")
    probe = None
    try:
        probe = Probe(domain, "shutdown_probe")
        twist_msgs = probe.listen(Twist, "/cmd_vel", clock=time.time)
        interventions = probe.listen(Bool, "/intervention", clock=time.time)
        joy = probe.node.create_publisher(Joy, "/joy", 10)
        n = [0]

        def push():  # left stick forward; button 4 (LB) tapped every 0.5 s until intervention is on
            n[0] += 1
            buttons = [0] * 8
            buttons[4] = int(n[0] % 10 == 0 and not any(m.data for m in interventions.msgs))
            joy.publish(Joy(axes=[0.0, 0.8, 0.0, 0.0, 0.0, 0.0], buttons=buttons))

        probe.node.create_timer(0.05, push)
        wait_for(lambda: any(m.linear.x > 0.7 for m in twist_msgs.msgs)
                 and any(m.data for m in interventions.msgs), 30, "vx 0.8 and intervention on", teleop)
        t_sig, elapsed = _signal_and_time(teleop, signal.SIGINT)
        time.sleep(0.3)
        twists = twist_msgs.since(t_sig)
        flags = [m.data for m in interventions.since(t_sig)]
    finally:
        if probe is not None:
            probe.close()
        teleop.stop()
    _assert_fast_clean_exit(teleop, elapsed, "teleop")
    assert twists, f"no cmd_vel after the signal:\n{teleop.output}"
    last = twists[-1]
    assert (last.linear.x, last.linear.y, last.angular.z) == (0.0, 0.0, 0.0), last
    assert flags and flags[-1] is False, flags
    assert "stopped: published zero velocity, intervention false" in teleop.output


@pytest.mark.timeout(60)
def test_teleop_panda_exits_within_2s_without_a_new_goal(tmp_path):
    """Manipulators: on SIGINT the goal stream stops (no goal stamped after the signal) and
    /intervention goes false; gone within 2 s."""
    from geometry_msgs.msg import PoseStamped
    from std_msgs.msg import Bool

    domain = domain_id(36)
    teleop = _roboreal(["teleop", "--robot", "panda"], domain, tmp_path / "teleop.log")
    probe = None
    try:
        probe = Probe(domain, "shutdown_probe")
        goals = probe.listen(PoseStamped, "/goal_pose", clock=time.time)
        interventions = probe.listen(Bool, "/intervention", clock=time.time)
        wait_for(lambda: len(goals.msgs) > 5, 30, "goals", teleop)
        t_sig, elapsed = _signal_and_time(teleop, signal.SIGINT)
        time.sleep(0.3)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in goals.msgs]
        flags = [m.data for m in interventions.since(t_sig)]
    finally:
        if probe is not None:
            probe.close()
        teleop.stop()
    _assert_fast_clean_exit(teleop, elapsed, "teleop")
    assert max(stamps) < t_sig + 0.05, f"a goal stamped {max(stamps) - t_sig:.3f} s after the signal"
    assert flags and flags[-1] is False, flags


# ----------------------------------------------------------------------------------------
# recorder
# ----------------------------------------------------------------------------------------
OBS, ACT, DT = 6, 3, 0.02


def _step(step: int) -> dict:
    from roboreal.sim2real.nodes.step_record import MODES

    k, a = np.arange(OBS, dtype=np.float64), np.arange(ACT, dtype=np.float64)
    return {"step": step, "stamp": 1000.0 + step * DT, "reset_count": 0, "mode": MODES.index("policy"),
            "intervention": 0.0, "human_action": 0.0, "observation": step * 0.01 + k * 0.001,
            "policy_action": np.tanh(0.1 * step + a) * 0.5, "commanded_action": np.tanh(0.1 * step + a) * 0.5,
            "applied_action": np.tanh(0.1 * step + a) * 0.4}


@pytest.mark.timeout(60)
def test_recorder_exits_within_2s_writing_the_running_episode(tmp_path):
    """A fake policy node streams ~/step at 50 Hz; SIGINT mid-episode: gone within 2 s, status
    0, the running episode readable in the HDF5 file (ended by the stop), the MCAP complete."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Float64MultiArray, String

    from roboreal.data import DatasetReader
    from roboreal.sim2real.nodes.step_record import MODES, StepPacker, info_json, step_fields

    domain = domain_id(37)
    out = tmp_path / "session.hdf5"
    rec = _roboreal(["record", "--out", str(out)], domain, tmp_path / "recorder.log")
    probe = None
    sent = []
    try:
        probe = Probe(domain, "shutdown_probe")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        info_pub = probe.node.create_publisher(String, "/policy_node/info", latched)
        step_pub = probe.node.create_publisher(Float64MultiArray, "/policy_node/step", QoSProfile(depth=1000))
        info = {"node": "/policy_node", "robot": "cartpole", "robot_spec_checksum": "abc", "control_dt": DT,
                "obs_size": OBS, "action_size": ACT, "obs_group": "policy", "step_fields": step_fields(OBS, ACT),
                "modes": list(MODES), "training": {"task": "synthetic", "algo": "ppo"},
                "bundle": {"path": "/bundles/x", "manifest_sha256": "f00d"},
                "topics": {"step": "/policy_node/step", "info": "/policy_node/info"}}
        info_pub.publish(String(data=info_json(info)))
        rec.wait_output("session: cartpole", 30)
        wait_for(lambda: step_pub.get_subscription_count() > 0, 10, "the recorder's step subscription", rec)
        packer = StepPacker(OBS, ACT)

        def publish_step():
            sent.append(len(sent) + 1)
            step_pub.publish(packer.pack(_step(sent[-1])))

        probe.node.create_timer(DT, publish_step)
        wait_for(lambda: len(sent) >= 100, 10, "100 steps sent")
        _, elapsed = _signal_and_time(rec, signal.SIGINT)
    finally:
        if probe is not None:
            probe.close()
        rec.stop()
    _assert_fast_clean_exit(rec, elapsed, "the recorder")
    with DatasetReader(out) as r:
        assert r.names == ["demo_0"], r.names
        ep = r.episode("demo_0")
        assert ep.attrs["ended_by"] == "the recorder stopped"
        first, last = ep.attrs["first_step"], ep.attrs["last_step"]
        assert first == 1 and last >= 100 and len(ep.actions) == last - first + 1, ep.attrs
        np.testing.assert_allclose(ep.obs["policy"][-1], _step(last)["observation"], atol=1e-6)
        assert [list(m) for m in ep.attrs["modes"]] == [["policy", last - first + 1]]
    mcap_path = out.with_suffix(".mcap")
    from mcap.reader import make_reader

    with open(mcap_path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None and summary.statistics.message_count >= last, "the MCAP was not finished"
