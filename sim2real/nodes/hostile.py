"""A hostile robot driver: what a policy node must survive, and a check of what it sends.

`HostileRobot` is an rclpy node that plays the robot a policy node drives (the topics of
robot.yaml's ``ros:`` section) and sends it whatever it is told: healthy readings that track
the commands like a perfect robot, or NaN/inf/huge/impossible values, wrong names, lengths
and order, bad stamps (stale, frozen, future, zero, going back), floods and silence, plus
velocity commands / goals, e-stops, resets, e-stop releases and teleop. Every command the
node publishes is checked on arrival, with the node's ``~/audit`` record of it, by
`roboreal.sim2real.safety.wire.WireChecker`; the state the node says it used must be one this
driver published.

`fuzz_actions` is a hypothesis strategy of such sessions (sequences of `Act`), `play` runs
one. Used by tests/test_safety_wire.py (a bounded run in CI) and
benchmarks/fuzz_wire.py (a long one). DDS stays on this host: the caller sets
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and its ROS_DOMAIN_ID.

One module although it is over 400 lines: a test and benchmark tool (never deployed)
whose hostile messages and the checks of what arrives share one model of the robot.
"""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roboreal.robots.spec import RobotSpec
from roboreal.sim2real.nodes.process import BackgroundNode, stop_process  # noqa: F401 (re-exported)
from roboreal.sim2real.nodes.step_record import MODES, audit_from_msg, parse_info
from roboreal.sim2real.safety.wire import WireChecker

# Values a broken sensor can produce (finite ones beyond every plausibility bound included).
WILD = (math.nan, math.inf, -math.inf, 1e308, -1e308, 1e30, -1e30, 10.0, -10.0, 0.0)


@dataclass
class Act:
    """One step of a hostile session (see `HostileRobot.play`).

    kind: stream | corrupt | silence | flood | displace | takeover | estop | reset |
          release_estop | intervention | teleop | command
    """

    kind: str
    duration: float = 0.0  # s of sensor stream this act lasts
    what: str = ""  # corrupt: which field; silence: which stream
    value: Any = None
    joint: int = 0


class HostileRobot:
    """The robot's side of the policy node's topics (see the module docstring)."""

    def __init__(self, spec: RobotSpec, node_name: str = "/policy_node", rate: float = 100.0,
                 interface: str | None = None, limits=None):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, Twist
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger

        self.spec, self.rate, self.node_name = spec, rate, node_name
        self.interface = interface or spec.ros.command_interface
        self.limits = limits
        self.background = BackgroundNode("hostile_robot")  # spins from the end of __init__: callbacks are set up first
        self.ctx, self.node = self.background.context, self.background.node
        n = self.node
        self._types = dict(JointState=JointState, Imu=Imu, Twist=Twist, PoseStamped=PoseStamped, Bool=Bool,
                           Float64MultiArray=Float64MultiArray, Trigger=Trigger)
        self.names = list(spec.joint_names) + (list(spec.gripper.joints) if spec.gripper else [])
        fingers = [0.02] * (len(self.names) - len(spec.joint_names))
        self.q = np.array([j.default for j in spec.joints] + fingers, dtype=float)
        self.dq = np.zeros(len(self.names))
        self.quat_xyzw = np.array([0.0, 0.0, 0.0, 1.0])
        self.gyro = np.zeros(3)
        self.accel = np.array([0.0, 0.0, 9.81])
        self.track = True  # the state follows the last command (a perfect robot)
        self.offset = np.zeros(len(spec.actuated_joints))  # ... displaced by this much
        self.cmd_vel = (0.3, 0.0, 0.0) if spec.ros.cmd_vel else None
        self.goal = (0.5, 0.0, 0.4) if spec.ros.goal else None
        self.frozen_stamp = None
        self.published_q: list[set] = [set() for _ in self.names]  # every position sent per joint
        self.published_dq: list[set] = [set() for _ in self.names]
        self.checker: WireChecker | None = None
        self.info: dict | None = None
        self.lock = threading.Lock()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.audits: list[dict] = []
        self.modes: list[tuple[float, str]] = []
        self.diagnostics: list[tuple[float, dict]] = []
        self.checked = 0
        self.problems: list[str] = []
        self.invented: list[str] = []  # audit states this driver never sent
        self.service_answers: collections.Counter = collections.Counter()

        deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_ALL)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        ros = spec.ros
        self.js_pub = n.create_publisher(JointState, ros.joint_states, qos_profile_sensor_data)
        self.imu_pub = n.create_publisher(Imu, ros.imu, qos_profile_sensor_data) if ros.imu else None
        self.cmd_pub = n.create_publisher(Twist, ros.cmd_vel, 10) if ros.cmd_vel else None
        self.goal_pub = n.create_publisher(PoseStamped, ros.goal, 10) if ros.goal else None
        self.estop_pub = n.create_publisher(Bool, f"{node_name}/estop", 10)
        self.intervention_pub = n.create_publisher(Bool, "/intervention", 10)
        self.teleop_pub = n.create_publisher(Float64MultiArray, "/teleop/action", 10)
        self.clients = {s: n.create_client(Trigger, f"{node_name}/{s}") for s in ("reset", "release_estop")}

        def on_command(msg):
            with self.lock:
                self.commands.append((time.monotonic(), np.array(msg.data, dtype=float)))

        def on_audit(msg):
            with self.lock:
                self.audits.append(audit_from_msg(msg))

        def on_mode(msg):
            with self.lock:
                self.modes.append((time.monotonic(), msg.data))

        def on_info(msg):
            self.info = parse_info(msg.data)

        def on_diag(msg):
            values = {kv.key: kv.value for s in msg.status if s.name.startswith("policy_node") for kv in s.values}
            if values:
                with self.lock:
                    self.diagnostics.append((time.monotonic(), values))

        n.create_subscription(Float64MultiArray, ros.joint_commands, on_command, deep)
        n.create_subscription(Float64MultiArray, f"{node_name}/audit", on_audit, deep)
        n.create_subscription(String, f"{node_name}/mode", on_mode, latched)
        n.create_subscription(String, f"{node_name}/info", on_info, latched)
        n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)

    # ------------------------------------------------------------------ setup
    def attach(self, dt: float, timeout: float = 30.0) -> None:
        """Wait for the node's ``~/info`` and set up the checker for its limits and interface."""
        end = time.monotonic() + timeout
        while self.info is None and time.monotonic() < end:
            time.sleep(0.05)
        if self.info is None:
            raise TimeoutError(f"no {self.node_name}/info within {timeout} s")
        from roboreal.sim2real.safety.limits import SafetyLimits

        limits = self.limits
        if limits is None:  # the node's own (possibly tightened) limits, as long as robot.yaml allows them
            limits = SafetyLimits.from_dict(self.info["safety_limits"])
            limits.check_within(SafetyLimits.from_spec(self.spec))
        self.checker = WireChecker(self.spec, dt, limits, self.info.get("command_interface", self.interface))

    # ------------------------------------------------------------------ checking
    def check_pending(self) -> list[str]:
        """Check every command that has arrived together with its audit; returns new problems."""
        new: list[str] = []
        with self.lock:
            pairs = min(len(self.commands), len(self.audits))
            todo = [(self.commands[k][1], self.audits[k]) for k in range(self.checked, pairs)]
            self.checked = max(self.checked, pairs)
        n = len(self.spec.actuated_joints)
        for values, audit in todo:
            mode = MODES[int(audit["mode"])] if 0 <= int(audit["mode"]) < len(MODES) else str(audit["mode"])
            found = self.checker.check(values, audit, mode)
            # the state the node says it used must be one this driver sent
            for k, (q, dq) in enumerate(zip(audit["q"], audit["dq"])):
                if k >= n:
                    break
                if math.isfinite(q) and q not in self.published_q[k]:
                    self.invented.append(f"q[{k}] = {q}")
                if math.isfinite(dq) and dq not in self.published_dq[k]:
                    self.invented.append(f"dq[{k}] = {dq}")
            new += found
        self.problems += new
        return new

    def unmatched_commands(self) -> int:
        with self.lock:
            return len(self.commands) - len(self.audits)

    def mode(self) -> str | None:
        with self.lock:
            return self.modes[-1][1] if self.modes else None

    def wait_mode(self, mode: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.mode() == mode:
                return True
            self.stream(0.05)
        return False

    # ------------------------------------------------------------------ sending
    def _stamp(self, offset: float = 0.0):
        from builtin_interfaces.msg import Time

        if self.frozen_stamp is not None:
            return self.frozen_stamp
        offset = max(-1e6, min(1e6, offset)) if math.isfinite(offset) else math.copysign(1e6, offset)  # fits a Time
        ns = self.node.get_clock().now().nanoseconds + int(offset * 1e9)
        return Time(sec=max(0, ns // 1_000_000_000), nanosec=ns % 1_000_000_000)

    def _follow(self) -> None:
        if not self.track:
            return
        with self.lock:
            last = self.commands[-1][1] if self.commands else None
        if last is not None and self.spec.control_mode == "position":
            n = len(self.spec.actuated_joints)
            self.q[:n] = last[:n] + self.offset

    def send_joint_state(self, q=None, dq=None, names=None, stamp=None) -> None:
        JointState = self._types["JointState"]
        js = JointState()
        js.header.stamp = self._stamp() if stamp is None else stamp
        q = self.q if q is None else q
        dq = self.dq if dq is None else dq
        js.name = list(self.names if names is None else names)
        js.position = [float(v) for v in q]
        js.velocity = [float(v) for v in dq]
        for k, v in enumerate(js.position[:len(self.names)]):
            self.published_q[k].add(v)
        for k, v in enumerate(js.velocity[:len(self.names)]):
            self.published_dq[k].add(v)
        if names is not None:  # shuffled/renamed: remember the values under the names they carry
            for name, v, w in zip(names, js.position, js.velocity):
                if name in self.names:
                    self.published_q[self.names.index(name)].add(v)
                    self.published_dq[self.names.index(name)].add(w)
        self.js_pub.publish(js)

    def send_imu(self, stamp=None, quat=None, gyro=None, accel=None) -> None:
        if self.imu_pub is None:
            return
        Imu = self._types["Imu"]
        m = Imu()
        m.header.stamp = self._stamp() if stamp is None else stamp
        qx, qy, qz, qw = (float(v) for v in (self.quat_xyzw if quat is None else quat))
        m.orientation.x, m.orientation.y, m.orientation.z, m.orientation.w = qx, qy, qz, qw
        g = self.gyro if gyro is None else gyro
        a = self.accel if accel is None else accel
        m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = (float(v) for v in g)
        m.linear_acceleration.x, m.linear_acceleration.y, m.linear_acceleration.z = (float(v) for v in a)
        self.imu_pub.publish(m)

    def send_command_input(self, value=None) -> None:
        """The velocity command (quadrupeds) or goal (manipulators): `value` or the current one."""
        if self.cmd_pub is not None and (value is not None or self.cmd_vel is not None):
            t = self._types["Twist"]()
            t.linear.x, t.linear.y, t.angular.z = (float(v) for v in (value if value is not None else self.cmd_vel))
            self.cmd_pub.publish(t)
        if self.goal_pub is not None and (value is not None or self.goal is not None):
            g = self._types["PoseStamped"]()
            g.header.stamp, g.header.frame_id = self._stamp(), "world"
            g.pose.position.x, g.pose.position.y, g.pose.position.z = (float(v) for v in
                                                                       (value if value is not None else self.goal))
            self.goal_pub.publish(g)

    def call(self, service: str, wait: float = 0.0) -> bool | None:
        """Call ~/reset or ~/release_estop; with `wait`, stream healthy readings until it answers
        (True: done, False: refused, None: no answer)."""
        client = self.clients[service]
        if not client.service_is_ready() and not (wait and client.wait_for_service(timeout_sec=wait)):
            return None
        fut = client.call_async(self._types["Trigger"].Request())
        fut.add_done_callback(lambda f: self.service_answers.update(
            [f"{service}: {'ok' if f.result() and f.result().success else 'refused'}"]))
        end = time.monotonic() + wait
        while wait and not fut.done() and time.monotonic() < end:
            self.stream(0.02)
        return (fut.result().success if fut.result() else None) if fut.done() else None

    def recover(self, timeout: float = 10.0) -> bool:
        """Back to policy mode: no intervention, faults reset, e-stop released, healthy readings."""
        self.intervention_pub.publish(self._types["Bool"](data=False))
        end = time.monotonic() + timeout
        while self.mode() != "policy" and time.monotonic() < end:
            if self.mode() in ("damping", "hold", "estop"):
                self.call("reset", wait=1.0)
                self.call("release_estop", wait=1.0)
            self.stream(0.2)
        return self.mode() == "policy"

    def stream(self, duration: float, joints: bool = True, imu: bool = True, commands: bool = True,
               corrupt=None) -> None:
        """Publish the sensors (and the command input) at `rate` for `duration` s; `corrupt`
        (a function of the message index returning kwargs for `send_joint_state`/`send_imu`,
        or None) spoils some of them."""
        period = 1.0 / self.rate
        end = time.monotonic() + duration
        k = 0
        while True:
            self._follow()
            bad = corrupt(k) if corrupt is not None else None
            js_kw, imu_kw = (bad or ({}, {}))
            if joints:
                self.send_joint_state(**js_kw)
            if imu:
                self.send_imu(**imu_kw)
            if commands and k % 2 == 0:
                self.send_command_input()
            k += 1
            if time.monotonic() >= end:
                break
            time.sleep(period)
        self.check_pending()

    # ------------------------------------------------------------------ sessions
    def play(self, acts: list[Act], deadline: float | None = None) -> int:
        """Run a hostile session (see `Act`), until `deadline` (monotonic) if given; every
        command is checked as it comes. Returns how many acts ran."""
        done = 0
        for act in acts:
            if deadline is not None and time.monotonic() > deadline:
                break
            getattr(self, f"_act_{act.kind}")(act)
            done += 1
        self.check_pending()
        return done

    def _act_stream(self, act: Act) -> None:
        self.stream(act.duration)

    def _act_corrupt(self, act: Act) -> None:
        n_all = len(self.names)
        j = act.joint % len(self.spec.joint_names)
        v = act.value

        def corrupt(k: int):
            if k >= max(1, int(act.duration * self.rate)):
                return None
            q, dq = self.q.copy(), self.dq.copy()
            if act.what == "position":
                q[j] = v
                return {"q": q}, {}
            if act.what == "velocity":
                dq[j] = v
                return {"dq": dq}, {}
            if act.what == "glitch":  # finite jumps within the limits, different every message
                lo, hi = self.spec.joints[j].position_limits
                q[j] = lo + (hi - lo) * ((k * 0.6180339887 + v) % 1.0)
                return {"q": q}, {}
            if act.what == "names_shuffled":
                order = np.roll(np.arange(n_all), 1 + _small_int(v) % max(1, n_all - 1))
                return {"q": q[order], "dq": dq[order], "names": [self.names[i] for i in order]}, {}
            if act.what == "names_unknown":
                return {"names": [f"bogus_{i}" for i in range(n_all)]}, {}
            if act.what == "names_duplicate":
                names = list(self.names)
                names[-1] = names[0]
                return {"names": names}, {}
            if act.what == "length":
                return {"q": q[: max(0, n_all - 1 - _small_int(v) % n_all)]}, {}
            if act.what in ("stamp_stale", "stamp_future"):
                stamp = self._stamp(-abs(v) if act.what == "stamp_stale" else abs(v))
                return {"stamp": stamp}, {"stamp": stamp}
            if act.what == "stamp_zero":
                Time = type(self._stamp())
                return {"stamp": Time()}, {"stamp": Time()}
            if act.what == "gyro":
                return {}, {"gyro": [v, 0.0, 0.0]}
            if act.what == "accel":
                return {}, {"accel": [0.0, 0.0, v]}
            if act.what == "quat":
                return {}, {"quat": [0.0, 0.0, 0.0, v]}
            return None

        if act.what == "stamp_frozen":
            self.frozen_stamp = self._stamp()
            try:
                self.stream(act.duration)
            finally:
                self.frozen_stamp = None
            return
        self.stream(act.duration, corrupt=corrupt)

    def _act_silence(self, act: Act) -> None:
        self.stream(act.duration, joints=act.what != "joints", imu=act.what != "imu",
                    commands=act.what != "commands")

    def _act_flood(self, act: Act) -> None:
        for _ in range(int(act.value)):
            self._follow()
            self.send_joint_state()
            self.send_imu()

    def _act_displace(self, act: Act) -> None:
        n = len(self.spec.actuated_joints)
        self.offset = np.full(n, float(act.value))
        self.dq[:n] = float(act.value) * 10.0
        try:
            self.stream(act.duration)
        finally:
            self.offset = np.zeros(n)
            self.dq[:n] = 0.0

    def _act_takeover(self, act: Act) -> None:
        """A (wild) human takes over: intervention on, a stream of teleop actions cycling
        through `act.value` (bang-bang, out of range, NaN...), intervention off."""
        self.intervention_pub.publish(self._types["Bool"](data=True))
        actions = list(act.value) or [[0.0]]
        k = [0]

        def teleop(_):
            a = actions[k[0] % len(actions)]
            k[0] += 1
            self.teleop_pub.publish(self._types["Float64MultiArray"](data=[float(v) for v in a]))
            return None

        try:
            self.stream(act.duration, corrupt=teleop)
        finally:
            self.intervention_pub.publish(self._types["Bool"](data=False))

    def _act_estop(self, act: Act) -> None:
        self.estop_pub.publish(self._types["Bool"](data=bool(act.value)))

    def _act_reset(self, act: Act) -> None:
        self.call("reset")

    def _act_release_estop(self, act: Act) -> None:
        self.call("release_estop")

    def _act_intervention(self, act: Act) -> None:
        self.intervention_pub.publish(self._types["Bool"](data=bool(act.value)))

    def _act_teleop(self, act: Act) -> None:
        self.teleop_pub.publish(self._types["Float64MultiArray"](data=[float(v) for v in act.value]))

    def _act_command(self, act: Act) -> None:
        self.send_command_input(act.value)

    # ------------------------------------------------------------------ end
    def report(self) -> dict:
        self.check_pending()
        out = self.checker.summary() if self.checker else {}
        out.update(unpaired=self.unmatched_commands(), invented=len(self.invented),
                   services=dict(self.service_answers))
        return out

    def close(self) -> None:
        self.background.close()


# (robot, task, algorithm, overrides) of the one-iteration training runs whose bundles the
# hostile sessions deploy: valid bundles, untrained policies (a human's wild takeovers
# stress the chain harder than any policy would)
TINY_RUNS = {"go1": ("go1-walk", "ppo", {"num_steps": 4, "num_minibatches": 1, "num_epochs": 1}),
             "panda": ("panda-reach", "sac", {})}


def tiny_bundle(robot: str, root: Path) -> Path:
    """A bundle for `robot` from a one-iteration training run in `root`."""
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle

    task, algo, over = TINY_RUNS[robot]
    run = Path(root) / robot
    train(resolve_config(task, algo, over, num_envs=2, total_steps=1, seed=0), run, progress=False)
    return export_bundle(run)


def start_policy_node(bundle: Path, robot: str, log: Path, interface: str = "forward_command",
                      config: str = "timer/single") -> subprocess.Popen:
    """`roboreal deploy` as a subprocess (same environment: DDS domain and range), output to `log`;
    `config` = "control_trigger/executor"."""
    trigger, executor = config.split("/")
    args = [sys.executable, "-m", "roboreal.sim2real.nodes.deploy_cli", "deploy", str(bundle), "--robot", robot,
            "--ros-args", "-p", "diagnostics_period:=0.5", "-p", f"command_interface:={interface}",
            "-p", f"control_trigger:={trigger}", "-p", f"executor:={executor}"]
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))




def _small_int(v) -> int:
    """A non-negative int from any float (NaN, inf and huge included), for shuffles and cuts."""
    return int(abs(v)) % 1000 if math.isfinite(v) else 1


def fuzz_actions(spec: RobotSpec, max_acts: int = 12):
    """A hypothesis strategy of hostile sessions for `spec`'s robot (lists of `Act`)."""
    from hypothesis import strategies as st

    n_joints = len(spec.joint_names)
    fields = ["position", "velocity", "glitch", "names_shuffled", "names_unknown", "names_duplicate", "length",
              "stamp_stale", "stamp_future", "stamp_zero", "stamp_frozen"]
    if spec.ros.imu:
        fields += ["gyro", "accel", "quat"]
    wild = st.one_of(st.sampled_from(WILD), st.floats(-20, 20), st.floats(allow_nan=True, allow_infinity=True))
    a = len(spec.actuated_joints)
    act = st.one_of(
        st.builds(Act, kind=st.just("stream"), duration=st.floats(0.1, 1.5)),
        st.builds(Act, kind=st.just("stream"), duration=st.floats(0.5, 3.0)),
        st.builds(Act, kind=st.just("corrupt"), duration=st.floats(0.0, 0.3), what=st.sampled_from(fields),
                  value=wild, joint=st.integers(0, n_joints - 1)),
        st.builds(Act, kind=st.just("silence"), duration=st.floats(0.05, 0.6),
                  what=st.sampled_from(["joints", "imu", "commands"])),
        st.builds(Act, kind=st.just("flood"), value=st.integers(10, 300)),
        st.builds(Act, kind=st.just("displace"), duration=st.floats(0.1, 0.8), value=st.floats(-0.6, 0.6)),
        st.builds(Act, kind=st.just("takeover"), duration=st.floats(0.2, 1.5),
                  value=st.lists(st.lists(st.one_of(st.sampled_from([-1.0, 1.0, -5.0, 5.0]), st.floats(-1, 1), wild),
                                          min_size=a, max_size=a), min_size=1, max_size=6)),
        st.builds(Act, kind=st.just("estop"), value=st.booleans()),
        st.builds(Act, kind=st.just("estop"), value=st.just(True)),
        st.builds(Act, kind=st.just("reset")),
        st.builds(Act, kind=st.just("reset")),
        st.builds(Act, kind=st.just("release_estop")),
        st.builds(Act, kind=st.just("intervention"), value=st.booleans()),
        st.builds(Act, kind=st.just("teleop"), value=st.lists(wild, min_size=a, max_size=a + 1)),
        st.builds(Act, kind=st.just("command"), value=st.lists(wild, min_size=3, max_size=3)),
    )
    return st.lists(act, min_size=1, max_size=max_acts)
