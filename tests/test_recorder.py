"""The demonstration recorder (`roboreal record`): episodes into the dataset DAgger trains on,
raw topics into MCAP; over real DDS on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST,
this file's own ROS_DOMAIN_IDs).

* the episode rules and the message schemas, without ROS traffic;
* a recorder subprocess fed by a fake policy node in this process (exact values, every
  episode boundary), then SIGKILLed mid-episode: every finished episode is intact, the
  MCAP recovers up to the kill;
* the recording-session launch file (sim bridge + policy node + teleop + recorder), a
  "human" on the joystick, and the recorded file fed to `roboreal dagger`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roboreal.data import DatasetReader, DatasetWriter
from roboreal.sim2real.nodes.record_episodes import EpisodeBuilder
from roboreal.sim2real.nodes.ros2_bag import message_definition
from roboreal.sim2real.nodes.step_record import MODES, info_json, step_fields, unpack_step

from ros_helpers import REPO, Probe, Process, domain_id, ros_env, wait_for

assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # conftest: DDS stays on loopback
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")

OBS, ACT, DT = 6, 3, 0.02


def step_values(step: int, reset: int = 0, mode: str = "policy", intervention: bool = False,
                human: bool = False) -> dict:
    """A synthetic step whose every value says which step it is."""
    k = np.arange(OBS, dtype=np.float64)
    a = np.arange(ACT, dtype=np.float64)
    return {"step": step, "stamp": 1000.0 + step * DT, "reset_count": reset, "mode": MODES.index(mode),
            "intervention": float(intervention), "human_action": float(human),
            "observation": step * 0.01 + k * 0.001, "policy_action": np.tanh(0.1 * step + a) * 0.5,
            "commanded_action": -0.3 - 0.01 * a if human else np.tanh(0.1 * step + a) * 0.5,
            "applied_action": np.clip(np.tanh(0.1 * step + a) * 0.4, -1, 1)}


def session_info(topics: dict | None = None) -> dict:
    return {"node": "/policy_node", "robot": "cartpole", "robot_spec_checksum": "abc", "control_dt": DT,
            "obs_size": OBS, "action_size": ACT, "obs_group": "policy", "step_fields": step_fields(OBS, ACT),
            "modes": list(MODES), "training": {"task": "synthetic", "algo": "ppo"},
            "bundle": {"path": "/bundles/x", "manifest_sha256": "f00d"}, "topics": topics or {}}


# ----------------------------------------------------------------------------------------
# Without ROS traffic
# ----------------------------------------------------------------------------------------
def test_episode_rules_and_labels(tmp_path):
    """Episodes start in the chain's policy mode and end at a reset, a gap, a fault, the max
    length and a timeout; labels only where the human's action ran in policy mode."""
    path = tmp_path / "d.hdf5"
    flushed = []
    b = EpisodeBuilder(lambda info: DatasetWriter(path, {"robot": "cartpole"}, fsync=False),
                       max_episode_steps=8, before_write=lambda: flushed.append(True))
    b.on_step(step_values(1), 0.0)  # before ~/info: dropped
    b.set_info(session_info())
    t = 0.0
    for s in (2, 3):
        b.on_step(step_values(s, mode="startup_ramp"), t)  # the ramp is not recorded
    for s in range(4, 10):  # 6 steps; takeover at 6..8, stale teleop at 8, a hold at 9
        mode = "hold" if s == 9 else "policy"
        b.on_step(step_values(s, mode=mode, intervention=6 <= s <= 8, human=6 <= s <= 7 or s == 9), t)
    b.on_step(step_values(10, reset=1, mode="startup_ramp"), t)  # ~/reset -> episode 0 ends
    for s in range(11, 21):  # 10 policy steps: max length 8 ends episode 1, episode 2 = 19..20
        b.on_step(step_values(s, reset=1), t)
    b.on_step(step_values(23, reset=1), t)  # 21, 22 missing: episode 2 ends, 3 starts
    b.on_step(step_values(24, reset=1, mode="damping"), t)  # fault: episode 3 ends
    b.on_step(step_values(25, reset=1, mode="damping"), t)
    b.on_step(step_values(26, reset=2, mode="policy"), t)  # (after a reset) episode 4
    assert b.set_success(True)
    b.check_timeout(0.5, 1.0)
    assert b.running
    b.check_timeout(1.5, 1.0)  # no step for > 1 s: written
    assert not b.running and len(flushed) == 5
    b.writer.close()
    ended = [e["ended_by"].split(" ")[0] for e in b.ended]
    assert ended == ["reset", "max", "gap:", "fault:", "no"]
    assert [e["steps"] for e in b.ended] == [6, 8, 2, 1, 1]
    assert b.dropped == {"before_info": 1, "refused": 0, "outside_episodes": 5}  # ramp 2, 3, 10; faults 24, 25
    with DatasetReader(path) as r:
        ep = r.episode(0)
        np.testing.assert_array_equal(ep.intervention, [0, 0, 1, 1, 1, 0])
        np.testing.assert_array_equal(ep.labeled, [0, 0, 1, 1, 0, 0])  # stale at 8, hold at 9: no label
        np.testing.assert_allclose(ep.expert_actions[2], step_values(6, human=True)["commanded_action"], atol=1e-7)
        np.testing.assert_allclose(ep.actions, np.stack([step_values(s)["applied_action"] for s in range(4, 10)]),
                                   atol=1e-7)
        np.testing.assert_allclose(ep.obs["policy"][0], step_values(4)["observation"], atol=1e-7)
        np.testing.assert_array_equal(ep.dones, [0, 0, 0, 0, 0, 1])
        assert ep.attrs["modes"] == [["policy", 5], ["hold", 1]] and ep.attrs["first_step"] == 4
        assert r.episode(4).success is True and r.episode(1).success is None
        assert r.summary()["labels"] == 2
    # a session that does not fit the file is refused, not mixed in
    b2 = EpisodeBuilder(lambda info: DatasetWriter(path, mode="a", fsync=False))
    b2.set_info({**session_info(), "obs_size": OBS + 1, "step_fields": step_fields(OBS + 1, ACT)})
    assert b2.refusing is None  # the file names no observation size yet: nothing to contradict
    b2.writer.set_attrs(obs_groups={"policy": OBS})
    b2.set_info({**session_info(), "obs_size": OBS + 2})
    assert b2.refusing and "size 6" in b2.refusing
    b2.on_step(step_values(1), 0.0)
    assert b2.dropped["refused"] == 1
    b2.writer.close()


def test_message_definitions_decode_with_mcap_ros2(tmp_path, monkeypatch):
    """The ros2msg schemas (installed .msg files, or built from the message classes when those
    are missing) decode what rclpy serialized."""
    from geometry_msgs.msg import PoseStamped
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Imu, JointState

    from roboreal.sim2real.nodes import ros2_bag

    js = JointState(name=["a", "b"], position=[1.0, -2.0], velocity=[0.5, 0.25])
    js.header.stamp.sec, js.header.frame_id = 7, "base"
    imu = Imu()
    imu.orientation.w, imu.orientation_covariance[8], imu.angular_velocity.z = 1.0, -1.0, 0.3
    goal = PoseStamped()
    goal.pose.position.x = 0.5
    msgs = {"/js": ("sensor_msgs/msg/JointState", js), "/imu": ("sensor_msgs/msg/Imu", imu),
            "/goal": ("geometry_msgs/msg/PoseStamped", goal)}
    assert "MSG: std_msgs/msg/Header" in message_definition("sensor_msgs/msg/JointState")
    for variant in ("files", "introspection"):
        if variant == "introspection":
            monkeypatch.setattr(ros2_bag, "_share_roots", lambda pkg: [])
        path = tmp_path / f"{variant}.mcap"
        w = ros2_bag.McapTopicWriter(path)
        for topic, (type_name, msg) in msgs.items():
            w.add_topic(topic, type_name)
            w.write(topic, serialize_message(msg), 1)
        w.finish()
        with open(path, "rb") as f:
            decoded = {ch.topic: m for _, ch, _, m in make_reader(f, decoder_factories=[DecoderFactory()])
                       .iter_decoded_messages()}
        assert decoded["/js"].name == ["a", "b"] and list(decoded["/js"].velocity) == [0.5, 0.25]
        assert decoded["/js"].header.frame_id == "base" and decoded["/js"].header.stamp.sec == 7
        assert decoded["/imu"].orientation_covariance[8] == -1.0 and decoded["/imu"].angular_velocity.z == 0.3
        assert decoded["/goal"].pose.position.x == 0.5


# ----------------------------------------------------------------------------------------
# Over DDS
# ----------------------------------------------------------------------------------------
def _mcap_messages(path: Path, complete: bool = True) -> dict[str, list]:
    """{topic: [decoded message, ...]} of an MCAP (complete: through its index)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        if complete:
            summary = reader.get_summary()
            assert summary is not None and summary.statistics.message_count > 0
        for _, ch, _, m in reader.iter_decoded_messages():
            out.setdefault(ch.topic, []).append(m)
    return out


def _steps(msgs: list) -> list[dict]:
    return [unpack_step([d.label for d in m.layout.dim], [d.size for d in m.layout.dim], m.data) for m in msgs]


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_recorder_pairs_steps_exactly_and_a_kill_loses_only_the_running_episode(tmp_path):
    """A fake policy node publishes ~/info, ~/step and /joint_states; the recorder subprocess
    writes each episode at its boundary; SIGKILL mid-episode leaves every finished episode
    readable and exact, and the torn MCAP recovers everything flushed before the kill."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from roboreal.sim2real.nodes.step_record import StepPacker

    domain = domain_id(25)
    out = tmp_path / "session.hdf5"
    rec = Process([sys.executable, "-m", "roboreal", "record", "--out", str(out), "--max-episode-s", "0.5",
                   "--ros-args", "-p", "mcap_flush_period:=0.3", "-p", "extra_topics:=[/joint_states]"],
                  ros_env(domain), stop_timeout=20)
    probe = None
    try:
        probe = Probe(domain, "recorder_test_probe")
        n = probe.node
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        info_pub = n.create_publisher(String, "/policy_node/info", latched)
        from std_msgs.msg import Float64MultiArray

        step_pub = n.create_publisher(Float64MultiArray, "/policy_node/step", QoSProfile(depth=1000))
        js_pub = n.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        packer = StepPacker(OBS, ACT)
        info_pub.publish(String(data=info_json(session_info({"step": "/policy_node/step",
                                                             "info": "/policy_node/info"}))))
        rec.wait_output("session: cartpole", 30)
        rec.wait_output("recording /joint_states", 10)
        wait_for(lambda: step_pub.get_subscription_count() > 0, 10, "the recorder's step subscription")

        def publish(steps):
            for s in steps:
                step_pub.publish(packer.pack(step_values(*s)))
                time.sleep(0.004)

        # A: steps 1-3 ramp, 4-13 policy (takeover 8-11, the teleop stale at 11); ~/reset at 14
        publish([(s, 0, "startup_ramp") for s in (1, 2, 3)])
        publish([(s, 0, "policy", 8 <= s <= 11, 8 <= s <= 10) for s in range(4, 14)])
        publish([(14, 1, "startup_ramp"), (15, 1, "startup_ramp")])
        # B: 16..40 (max length 25), C: 41..45 then a gap, D: 50..59 then a fault
        publish([(s, 1) for s in range(16, 46)] + [(s, 1) for s in range(50, 60)])
        publish([(60, 1, "damping"), (61, 1, "damping"), (62, 2, "startup_ramp")])
        wait_for(lambda: js_pub.get_subscription_count() > 0, 10, "the recorder's /joint_states subscription")
        for i in range(20):  # raw topic: into the MCAP
            js = JointState(name=["slider", "hinge"], position=[0.01 * i, -0.02 * i])
            js_pub.publish(js)
        # E: 63..72, ended by the service; F: 73..82, running when the recorder is killed
        publish([(s, 2, "policy", s >= 70, s >= 70) for s in range(63, 73)])
        time.sleep(0.3)
        res = probe.call(Trigger, "/recorder/end_episode", Trigger.Request())
        assert res.success and "demo_4" in res.message, res.message
        publish([(s, 2, "policy", True, True) for s in range(73, 83)])
        time.sleep(1.0)  # > 3 MCAP flush periods: the raw topics are on disk
        rec.proc.send_signal(signal.SIGKILL)
        rec.proc.wait(10)
    finally:
        if probe is not None:
            probe.close()
        rec.stop()
    assert rec.proc.returncode == -signal.SIGKILL
    assert "stopped:" not in rec.output  # it really was killed, nothing ran on the way out

    # the dataset: exactly the five finished episodes, value for value
    expected = [(range(4, 14), "reset"), (range(16, 41), "max length"), (range(41, 46), "gap"),
                (range(50, 60), "fault"), (range(63, 73), "~/end_episode")]
    with DatasetReader(out) as r:
        assert r.names == [f"demo_{i}" for i in range(5)] and not r.skipped
        assert r.meta["source"] == "robot" and r.meta["robot"] == "cartpole" and r.meta["control_dt"] == DT
        assert r.meta["obs_groups"] == {"policy": OBS} and r.meta["bundle"]["manifest_sha256"] == "f00d"
        assert r.meta["task"] == "synthetic" and r.meta["total"] == sum(len(s) for s, _ in expected)
        for (steps, why), name in zip(expected, r.names):
            ep = r.episode(name)
            assert ep.attrs["ended_by"].startswith(why), ep.attrs["ended_by"]
            assert (ep.attrs["first_step"], ep.attrs["last_step"]) == (steps[0], steps[-1])
            vals = [step_values(s, mode="policy") for s in steps]
            np.testing.assert_array_equal(ep.obs["policy"],
                                          np.stack([v["observation"] for v in vals]).astype(np.float32))
            np.testing.assert_array_equal(ep.actions, np.stack([v["applied_action"] for v in vals]).astype(np.float32))
            np.testing.assert_array_equal(ep.policy_actions,
                                          np.stack([v["policy_action"] for v in vals]).astype(np.float32))
        a, e = r.episode(0), r.episode(4)
        np.testing.assert_array_equal(a.intervention, [0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
        np.testing.assert_array_equal(a.labeled, [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(a.expert_actions[4], np.float32(-0.3 - 0.01 * np.arange(ACT)))
        assert np.isnan(a.expert_actions[~a.labeled]).all()
        assert e.labeled.sum() == 3 and r.summary()["labels"] == 6

    # the MCAP: killed, so no index, yet a complete MCAP the standard readers read (tests/test_mcap_recording.py);
    # --recover indexes it
    mcap = out.with_suffix(".mcap")
    from mcap.reader import make_reader

    with open(mcap, "rb") as f:
        assert make_reader(f).get_summary() is None  # the summary the kill never wrote
    assert subprocess.run([sys.executable, "-m", "roboreal", "record", "--recover", str(mcap)], env=ros_env(domain),
                          cwd=REPO, capture_output=True, text=True).returncode == 0
    msgs = _mcap_messages(mcap.with_name("session.recovered.mcap"))
    steps = [int(f["step"]) for f in _steps(msgs["/policy_node/step"])]
    assert set(steps) >= {s for rng, _ in expected for s in rng}  # flushed before each episode was written
    assert steps == sorted(steps) and len(msgs["/joint_states"]) == 20
    assert msgs["/joint_states"][-1].position[1] == pytest.approx(-0.38)
    assert json.loads(msgs["/policy_node/info"][0].data)["robot"] == "cartpole"

    # a recording is never overwritten
    again = subprocess.run([sys.executable, "-m", "roboreal", "record", "--out", str(out)], env=ros_env(domain),
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists: pass --append" in again.stderr


@pytest.fixture(scope="module")
def panda_bundle(tmp_path_factory) -> Path:
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle

    run = tmp_path_factory.mktemp("recorder_runs") / "panda"
    train(resolve_config("panda-reach", "sac", {}, num_envs=2, total_steps=1, seed=0), run, progress=False)
    return export_bundle(run)


@pytest.mark.ros
@pytest.mark.timeout(150)
def test_recording_session_feeds_dagger(panda_bundle, tmp_path):
    """launch/record_session.launch.xml (sim bridge, policy node, teleop, recorder); a human on
    the joystick takes over twice; the recorded file trains `roboreal dagger --expert human`
    on exactly the steps where the human's action drove the robot."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from roboreal.cli import main
    from roboreal.robots.spec import load_robot
    from roboreal.policy_bundle import load_bundle, sha256

    domain = domain_id(75)
    out = tmp_path / "session.hdf5"
    runner = Process([sys.executable, "-m", "roboreal", "launch", "record_session.launch.xml",
                      f"bundle:={panda_bundle}", f"out:={out}", "robot:=panda"], ros_env(domain),
                     stop_timeout=20)
    probe = None
    try:
        probe = Probe(domain, "recorder_test_probe")
        modes: list[tuple[float, str]] = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        probe.node.create_subscription(String, "/policy_node/mode", lambda m: modes.append((time.monotonic(), m.data)),
                                       latched)
        joy_pub = probe.node.create_publisher(Joy, "/joy", 10)

        def joy(axes=(0.0,) * 5, button=0):
            m = Joy()
            m.axes = [float(a) for a in axes]
            m.buttons = [0, 0, 0, 0, button]
            joy_pub.publish(m)

        def settle(timeout):
            """Wait for the policy mode. A >0.1 s stall of a loaded 2-core machine may trip the joint-state
            watchdog (panda: a latched hold): reset the policy node then (a new episode)."""
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if modes and modes[-1][1] == "policy":
                    return
                if modes and modes[-1][1] in ("hold", "damping", "estop") and time.monotonic() - modes[-1][0] > 1.5:
                    probe.call(Trigger, "/policy_node/reset", Trigger.Request())
                time.sleep(0.05)
            raise AssertionError(f"no policy mode within {timeout} s (modes {modes}):\n{runner.output}")

        def takeover(seconds: float):
            joy(button=1)  # the intervention button (teleop_manipulator.yaml: 4)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                joy((0.5, -0.4, 0.0, 0.3, 0.6))
                time.sleep(0.02)
            joy(button=1)  # hand back to the policy
            joy()

        settle(90)
        runner.wait_output("recording /joy", 10)
        time.sleep(0.6)  # the policy drives
        takeover(1.2)
        time.sleep(0.5)
        res = probe.call(Trigger, "/recorder/end_episode", Trigger.Request())
        assert res.success, res.message
        settle(10)
        takeover(0.8)
        time.sleep(0.4)
    finally:
        if probe is not None:
            probe.close()
        rc = runner.stop()
    assert rc == 0, runner.output
    assert "[recorder] [recorder] stopped:" in runner.output, runner.output  # the running episode was written

    with DatasetReader(out) as r:
        s = r.summary()
        m = r.meta
        demos = [r.episode(n) for n in r.names]
    manifest = load_bundle(panda_bundle).manifest
    assert m["robot"] == "panda" and m["task"] == "panda-reach" and m["source"] == "robot"
    assert m["bundle"]["manifest_sha256"] == sha256(panda_bundle / "manifest.yaml")
    assert m["control_dt"] == manifest["control"]["dt"]
    assert m["obs_groups"] == {"policy": manifest["observation"]["size"]}
    assert s["episodes"] >= 2 and s["action_size"] == manifest["action"]["size"]
    assert 0 < s["labels"] <= s["interventions"] < s["steps"], s

    # the MCAP (finished on Ctrl-C): the raw topics, and the same steps as the dataset
    msgs = _mcap_messages(out.with_suffix(".mcap"))
    for topic in ("/joint_states", "/goal_pose", "/forward_position_controller/commands", "/intervention",
                  "/teleop/action", "/joy", "/policy_node/step", "/policy_node/mode", "/policy_node/info"):
        assert msgs.get(topic), f"no {topic} in the MCAP (topics: {sorted(msgs)})"
    assert list(msgs["/joint_states"][-1].name)[:7] == load_robot("panda").joint_names
    steps = {int(f["step"]): f for f in _steps(msgs["/policy_node/step"])}
    human = [f for f in steps.values() if f["human_action"] and MODES[int(f["mode"])] == "policy"]
    assert len(human) == s["labels"]  # every step the human's action drove is a label, no other
    for ep in demos:  # the dataset's observations/labels are the policy node's, step for step
        rows = [steps[k] for k in range(ep.attrs["first_step"], ep.attrs["last_step"] + 1)]
        np.testing.assert_array_equal(ep.obs["policy"], np.stack([f["observation"] for f in rows]).astype(np.float32))
        lab = ep.labeled
        if lab.any():
            np.testing.assert_array_equal(ep.expert_actions[lab], np.stack(
                [f["commanded_action"] for f, ok in zip(rows, lab) if ok]).astype(np.float32))

    # ... and DAgger trains on it: one label per takeover step; the run plays and exports
    run = tmp_path / "dagger"
    assert main(["dagger", "--task", "panda-reach", "--expert", "human", "--dataset", str(out), "--run-dir", str(run),
                 "--quiet", "eval_episodes=0", "num_envs=1", "bc.max_epochs=2", "bc.updates_per_epoch=5",
                 "bc.hidden=[32,32]", "bc.val_fraction=0"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == s["labels"] and metrics["history"][0]["train_episodes"] == s["episodes"]
    assert main(["play", str(run), "--episodes", "1"]) == 0
    assert main(["export", str(run)]) == 0
    assert load_bundle(run / "bundle", robot="panda").manifest["training"]["algo"] == "dagger"
