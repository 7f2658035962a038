"""A hostile (or broken) robot driver against the policy node, over real DDS.

The policy node (`roboreal deploy BUNDLE --robot ROBOT`) runs as a subprocess; this
script's own rclpy node plays the robot: it publishes sensor_msgs/JointState (spec joint
names, sensor-data QoS, header stamps from its clock) at 100 Hz from a background thread,
sensor_msgs/Imu and geometry_msgs/Twist (go1), geometry_msgs/PoseStamped goals (panda,
frame "world"), and "tracks" the commands like a perfect robot (q = last command received,
dq = 0) unless a case says otherwise. With the new code (roboreal.sim2real.nodes.hostile
importable) the messages go out through the package's `HostileRobot` (send_joint_state,
send_imu, send_command_input, its e-stop publisher and service clients), the node starts with
its `start_policy_node` and stops with `stop_process`, the bundles come from `tiny_bundle`;
with an older roboreal (PYTHONPATH=/tmp/before_pkg) the script's own equivalents are used.

Every command the node publishes on the robot's command topic (robot.yaml
`ros.joint_commands`, received reliable, depth 200) is checked:

  * when the node publishes /policy_node/audit (the new code: one record per command,
    received RELIABLE, the k-th command of a node process paired with audit seq k), by
    `roboreal.sim2real.safety.wire.WireChecker`, the one definition of the wire invariants:
    finite, position_limits, rate (always), gains, torque (with the gains the robot applies
    and the state the chain used; on a fixed-gain interface a command that is the rate
    window's point nearest to the torque bound counts as `torque_best_effort`, not as a
    violation), velocity, audit (pairing). The limits and interface come from the node's
    ~/info (as HostileRobot.attach does). The audit's q/dq must also be values this client
    published ("invented" counts those that are not).
  * always (and alone for the old code, which has no audit), by this script's own checks:
    finite, limits ([lower + joint_position_margin, upper - joint_position_margin]), rate
    (|cmd_k - cmd_{k-1}| <= max_target_rate * dt (+1e-9) per joint, per node process) and the
    APPROXIMATE strict torque check: |kp*(cmd - q) - kd*dq| <= torque_limit * torque_scale
    with robot.yaml's fixed kp/kd (the gains on the wire with position_gains) and (q, dq) =
    the last state this client published before the command arrived ("torque~"), or
    violated against EACH of the last three published states ("torque~3", the sturdier
    figure). Strict: no best-effort allowance (the only torque figure the old code allows;
    kept to compare before/after).

Cases (one results row per case and robot; each sub-part starts a fresh node process
unless it says otherwise):

  A  rate limit in policy mode: one joint (panda_joint7 / FR_calf_joint) reads -10 rad
     for 10 messages, then 1e308 for 10 messages, then the truth again.
  B  a latched fault (one NaN joint position; then, in a fresh node, true on
     /policy_node/estop), then finite glitching encoders (every joint jumps by up to
     +-2 rad within its limits, every message) for 2 s; figures per mode.
  C  torque: the state lags the commands (q = command - lag on every joint, clipped to the
     joint limits; dq = +5/-5 rad/s alternating by joint) in policy mode: lag 0.5 rad for
     2 s, then lag 1.5 rad for 2 s (each lag ramped in at half the plausible joint speed,
     0.5 x 3 x the slowest joint's velocity limit: faster than the rate limit, but never an
     encoder jump the new code would flag as implausible, as the original instant jump was
     on panda). With robot.yaml's fixed gains no target within the rate window may meet the
     torque bound (best effort).
  D  plausibility, each 0.5 s in policy mode: joints at +-10 rad, joints at 1e308,
     velocities of 1e308, gyro of 1e30 (go1), quaternion of norm 3 (go1): does the node
     leave policy mode (which mode, how fast), name the field (log warning or
     /diagnostics "faults"), log overflow RuntimeWarnings?
  E  reset spam: state displaced 0.5 rad from the commands on every joint (ramped in over
     0.5 s), 20 calls of /policy_node/reset at 10 Hz; then (same node) e-stop + one reset:
     does reset alone release the e-stop? Then (new code) /policy_node/release_estop and
     /policy_node/reset while every joint reads dq = 1 rad/s (> reset_max_joint_speed):
     refused? Then release_estop at rest: released, back to policy mode?
  F  header stamps, 2 s each: (1) the same old state stamped 1 s in the past, (2) a
     stamp frozen at the case start while data flows at 100 Hz, (3) 1 s in the future,
     (4) zero. Detected = the node leaves policy mode or /diagnostics reports it (faults,
     dropped.JointState.last_reason).
  G  node stall: 200 Hz data with fresh stamps, SIGSTOP 150 ms / SIGCONT, 10 times 1 s
     apart: a healthy stream must NOT latch the watchdog (after a latch the node is reset
     so each stall counts; /diagnostics "overruns" reported); then (fresh node) real
     silence: time from the last JointState to damping/hold, required <= watchdog.joint_states
     + one control period.
  H  SIGINT in policy mode: time to exit, whether a final command and mode "estop" came.
  I  C with -p command_interface:=position_gains (commands are [positions, kp, kd]): the
     torque bound must hold outright (no best effort); new code only (the old node has no
     such interface: the row says so).

    python benchmarks/hostile_client.py [--robot go1|panda|all] [--cases ABCDEFGHI]
                                        [--json out.json] [--table out.txt]

To test another checkout's package, put it first on PYTHONPATH (the node subprocesses
inherit it; the JSON's roboreal_from and, for the old code, each node log's first line say
which roboreal was imported). DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
on ROS_DOMAIN_ID (default 217). A full run (all cases, both robots) takes about 6 minutes
on the 2-core machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "217")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROBOTS = ("go1", "panda")
CASES = "ABCDEFGHI"
FAULT_MODES = ("hold", "damping", "estop")
TINY_PPO = {"num_steps": 4, "num_minibatches": 1, "num_epochs": 1}
RUNS = {"go1": ("go1-walk", "ppo", TINY_PPO), "panda": ("panda-reach", "sac", {})}  # = hostile.TINY_RUNS
ATTACK_JOINT = {"go1": "FR_calf_joint", "panda": "panda_joint7"}
BOOT = ("import sys, roboreal; print('[hostile_client] roboreal from', roboreal.__file__, flush=True); "
        "from roboreal.cli import main; sys.exit(main(sys.argv[1:]))")
INVARIANTS = ("finite", "position_limits", "rate", "gains", "torque", "velocity", "audit")  # = wire.INVARIANTS

# the new code's hostile driver and wire checks (None with an older roboreal: the script's own
# publishing / process handling and its approximate checks only); set by load_package()
PKG = None      # roboreal.sim2real.nodes.hostile
WIRE = None     # roboreal.sim2real.safety.wire
STEP = None     # roboreal.sim2real.nodes.step_record


def load_package() -> None:
    global PKG, WIRE, STEP
    try:
        from roboreal.sim2real.nodes import hostile, step_record
        from roboreal.sim2real.safety import wire
    except ImportError:
        return
    PKG, WIRE, STEP = hostile, wire, step_record


class NodeDied(Exception):
    pass


class CaseTimeout(Exception):
    pass


class CaseFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- limits
class Limits:
    """The invariants' numbers, from robot.yaml (spec) and the bundle's control period."""

    def __init__(self, spec, dt: float):
        act = list(spec.actuated_joints)
        s = spec.safety
        self.names = [j.name for j in act]
        self.n = len(act)
        self.raw_lo = np.array([float(j.position_limits[0]) for j in act])
        self.raw_hi = np.array([float(j.position_limits[1]) for j in act])
        self.margin = float(s.joint_position_margin)
        self.lo, self.hi = self.raw_lo + self.margin, self.raw_hi - self.margin
        self.dt = float(dt)
        self.max_step = float(s.max_target_rate) * self.dt
        self.kp = np.array([float(j.kp) for j in act])
        self.kd = np.array([float(j.kd) for j in act])
        self.tau = np.array([float(j.torque_limit) for j in act]) * float(s.torque_scale)
        self.default = np.array([float(j.default) for j in act])
        self.fault_mode = str(s.fault_mode)
        self.fade = float(s.fade_in_time)
        self.wd_js = float(s.watchdog.joint_states)
        # the fastest a joint can plausibly move (the new code's plausibility check; 3 x the
        # velocity limit, its default, for an older spec without one)
        factor = float(getattr(getattr(s, "plausibility", None), "velocity_factor", 3.0))
        self.plausible_speed = float(min(float(j.velocity_limit) for j in act)) * factor

    def to_dict(self) -> dict:
        return {"dt": self.dt, "max_step_rad": self.max_step, "margin": self.margin, "fault_mode": self.fault_mode,
                "watchdog_joint_states_s": self.wd_js, "tau_bound": self.tau.tolist(), "kp": self.kp.tolist(),
                "kd": self.kd.tolist()}


# ----------------------------------------------------------------------------- the robot
class HostileRobot:
    """This script's rclpy node: plays the robot and records everything the node says.

    With the new code the node and its publishers are the package's `HostileRobot`'s (its
    send_* methods publish; this class adds the 100 Hz background publisher the cases steer
    with state_fn / stamp_fn, and its own recording subscriptions on the same node)."""

    def __init__(self, spec, lim: Limits, rate: float = 100.0):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Bool, Float64MultiArray, String
        from std_srvs.srv import Trigger

        self.msg = dict(Bool=Bool, Trigger=Trigger)
        self.spec, self.lim, self.rate = spec, lim, float(rate)
        self.names = list(spec.joint_names) + (list(spec.gripper.joints) if spec.gripper else [])
        self.q_full = np.array([float(j.default) for j in spec.joints]
                               + ([float(spec.gripper.open)] * len(spec.gripper.joints) if spec.gripper else []))
        self.act_idx = np.array([self.names.index(nm) for nm in lim.names])
        self.is_quadruped = bool(spec.ros.imu)
        # what the robot publishes (the cases change these)
        self.state_fn = None          # callable(self) -> (q_act, dq_act); None: track the commands
        self.stamp_fn = None          # callable(now_ns) -> stamp ns; None: now
        self.publish_joints = True
        self.quat_xyzw = (0.0, 0.0, 0.0, 1.0)
        self.gyro = (0.0, 0.0, 0.0)
        self.cmd_vel = (0.3, 0.0, 0.0)
        self.goal = (0.5, 0.0, 0.4)
        self.last_cmd: np.ndarray | None = None
        self.js_count = 0
        self.js_last_time: float | None = None
        self.history: collections.deque = collections.deque(maxlen=8)  # (t, q_act, dq_act) published
        self.lock = threading.Lock()
        self.rng = np.random.default_rng(0)
        self._stop = threading.Event()
        self.clear()

        if PKG is not None:
            self.base = PKG.HostileRobot(spec, rate=self.rate)  # spins its node in its own thread
            self.base.track = False  # this class steers the state (the base's stream() is never called)
            self.node = n = self.base.node
            self.estop_pub = self.base.estop_pub
            self.clients = dict(self.base.clients)
            self.executor = None
        else:
            self.base = None
            self._own_node(spec)
            n = self.node
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        deep = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        n.create_subscription(Float64MultiArray, spec.ros.joint_commands, self._on_command, deep)
        n.create_subscription(String, "/policy_node/mode", self._on_mode, latched)
        n.create_subscription(String, "/policy_node/info", self._on_info, latched)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, QoSProfile(depth=50))
        # the node publishes ~/audit reliable, depth 100: received reliable, nothing lost
        audit_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_ALL)
        n.create_subscription(Float64MultiArray, "/policy_node/audit", self._on_audit, audit_qos)
        if self.base is None:
            from rclpy.executors import SingleThreadedExecutor

            self.executor = SingleThreadedExecutor(context=self.ctx)
            self.executor.add_node(n)
            self.spin_thread = threading.Thread(target=self._spin, daemon=True)
            self.spin_thread.start()
        self.pub_thread = threading.Thread(target=self._publish_loop, daemon=True)
        self.pub_thread.start()

    def _own_node(self, spec) -> None:
        """The old code's path: this script's own node, publishers and service clients."""
        import rclpy
        from geometry_msgs.msg import PoseStamped, Twist
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Imu, JointState
        from std_msgs.msg import Bool
        from std_srvs.srv import Trigger

        self.msg.update(JointState=JointState, Imu=Imu, Twist=Twist, PoseStamped=PoseStamped)
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = n = rclpy.create_node("hostile_robot", context=self.ctx)
        self.js_pub = n.create_publisher(JointState, spec.ros.joint_states, qos_profile_sensor_data)
        self.imu_pub = n.create_publisher(Imu, spec.ros.imu, qos_profile_sensor_data) if spec.ros.imu else None
        self.twist_pub = n.create_publisher(Twist, spec.ros.cmd_vel, 10) if spec.ros.cmd_vel else None
        self.goal_pub = n.create_publisher(PoseStamped, spec.ros.goal, 10) if spec.ros.goal else None
        self.estop_pub = n.create_publisher(Bool, "/policy_node/estop", 10)
        self.clients = {s: n.create_client(Trigger, f"/policy_node/{s}") for s in ("reset", "release_estop")}

    # ----- records
    def clear(self) -> None:
        with self.lock:
            self.commands: list = []   # (t_arrival, values, last published states)
            self.modes: list = []      # (t, mode)
            self.diags: list = []      # (t, {"level", "message", "values"})
            self.audits: list = []     # (t, {field: value})
            self.info: dict | None = None
            self.last_cmd = None

    def snapshot(self) -> dict:
        with self.lock:
            return {"commands": list(self.commands), "modes": list(self.modes), "diags": list(self.diags),
                    "audits": list(self.audits), "info": self.info}

    def _on_command(self, msg) -> None:
        t = time.monotonic()
        v = np.array(msg.data, dtype=np.float64)
        n = self.lim.n
        with self.lock:
            self.commands.append((t, v, tuple(self.history)[-3:]))
            # forward_command: n positions; position_gains: [positions, kp, kd]
            if v.shape in ((n,), (3 * n,)) and np.isfinite(v[:n]).all():
                self.last_cmd = np.clip(v[:n], self.lim.raw_lo, self.lim.raw_hi)  # a perfect robot, up to its stops

    def _on_mode(self, msg) -> None:
        with self.lock:
            self.modes.append((time.monotonic(), str(msg.data)))

    def _on_info(self, msg) -> None:
        try:
            info = STEP.parse_info(msg.data) if STEP is not None else json.loads(msg.data)
        except Exception:
            return
        with self.lock:
            self.info = info

    def _on_diag(self, msg) -> None:
        t = time.monotonic()
        for s in msg.status:
            if not s.name.startswith("policy_node"):
                continue
            lvl = s.level
            lvl = lvl[0] if isinstance(lvl, (bytes, bytearray)) else int(lvl)
            with self.lock:
                self.diags.append((t, {"level": int(lvl), "message": s.message,
                                       "values": {kv.key: kv.value for kv in s.values}}))

    def _on_audit(self, msg) -> None:
        if STEP is not None:
            fields = STEP.audit_from_msg(msg)
        else:
            data = np.array(msg.data, dtype=np.float64)
            fields = {d.label: data[int(d.stride):int(d.stride) + int(d.size)] for d in msg.layout.dim}
        with self.lock:
            self.audits.append((time.monotonic(), fields))

    # ----- publishing
    def track(self) -> np.ndarray:
        c = self.last_cmd
        return (self.lim.default if c is None else c).copy()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.01)
            except Exception:  # context shut down on close
                if not self._stop.is_set():
                    traceback.print_exc()
                    time.sleep(0.01)

    def _publish_loop(self) -> None:
        k = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_t:
                time.sleep(min(next_t - now, 0.005))
                continue
            next_t += 1.0 / self.rate
            if next_t < now - 0.05:  # fell behind (a loaded machine): no burst to catch up
                next_t = now + 1.0 / self.rate
            try:
                self._tick(k)
            except Exception:
                if not self._stop.is_set():
                    traceback.print_exc()
            k += 1

    @staticmethod
    def _stamp_msg(ns: int):
        from builtin_interfaces.msg import Time

        ns = max(int(ns), 0)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def _tick(self, k: int) -> None:
        now_ns = self.node.get_clock().now().nanoseconds
        fn = self.stamp_fn
        stamp = self._stamp_msg(fn(now_ns) if fn is not None else now_ns)
        if self.publish_joints:
            sf = self.state_fn
            if sf is None:
                q, dq = self.track(), np.zeros(self.lim.n)
            else:
                q, dq = sf(self)
            q = np.asarray(q, dtype=np.float64)
            dq = np.asarray(dq, dtype=np.float64)
            qf = self.q_full.copy()
            dqf = np.zeros(len(self.names))
            qf[self.act_idx] = q
            dqf[self.act_idx] = dq
            self._send_joint_state(qf, dqf, stamp)
            t = time.monotonic()
            with self.lock:
                self.history.append((t, q.copy(), dq.copy()))
                self.js_count += 1
                self.js_last_time = t
        self._send_imu(stamp)
        if k % max(1, round(self.rate / 20)) == 0:  # commands at ~20 Hz (watchdog.command 0.5 s)
            self._send_command_input(stamp)

    def _send_joint_state(self, qf: np.ndarray, dqf: np.ndarray, stamp) -> None:
        if self.base is not None:
            self.base.send_joint_state(q=qf, dq=dqf, stamp=stamp)
            return
        js = self.msg["JointState"]()
        js.header.stamp = stamp
        js.name = self.names
        js.position = [float(x) for x in qf]
        js.velocity = [float(x) for x in dqf]
        self.js_pub.publish(js)

    def _send_imu(self, stamp) -> None:
        if not self.is_quadruped:
            return
        if self.base is not None:  # (the base's accelerometer reads gravity)
            self.base.send_imu(stamp=stamp, quat=self.quat_xyzw, gyro=self.gyro)
            return
        imu = self.msg["Imu"]()
        imu.header.stamp = stamp
        imu.header.frame_id = "imu"
        o = imu.orientation
        o.x, o.y, o.z, o.w = (float(x) for x in self.quat_xyzw)
        w = imu.angular_velocity
        w.x, w.y, w.z = (float(x) for x in self.gyro)
        self.imu_pub.publish(imu)

    def _send_command_input(self, stamp) -> None:
        if self.base is not None:  # (goals stamped now: the F cases spoil the sensor streams' stamps only)
            self.base.cmd_vel = self.cmd_vel if self.base.cmd_pub is not None else None
            self.base.goal = self.goal if self.base.goal_pub is not None else None
            self.base.send_command_input()
            return
        if self.twist_pub is not None:
            tw = self.msg["Twist"]()
            tw.linear.x, tw.linear.y, tw.angular.z = self.cmd_vel
            self.twist_pub.publish(tw)
        if self.goal_pub is not None:
            g = self.msg["PoseStamped"]()
            g.header.stamp, g.header.frame_id = stamp, "world"
            g.pose.position.x, g.pose.position.y, g.pose.position.z = self.goal
            g.pose.orientation.w = 1.0
            self.goal_pub.publish(g)

    # ----- helpers
    def mode(self) -> tuple[str | None, float | None]:
        with self.lock:
            return (self.modes[-1][1], self.modes[-1][0]) if self.modes else (None, None)

    def modes_since(self, t: float) -> list:
        with self.lock:
            return [(tm, md) for tm, md in self.modes if tm >= t]

    def first_mode_since(self, t: float, modes=FAULT_MODES):
        return next(((tm, md) for tm, md in self.modes_since(t) if md in modes), None)

    def diags_since(self, t: float) -> list:
        with self.lock:
            return [(td, d) for td, d in self.diags if td >= t]

    def commands_since(self, t: float) -> list:
        with self.lock:
            return [c for c in self.commands if c[0] >= t]

    def estop(self) -> None:
        self.estop_pub.publish(self.msg["Bool"](data=True))

    def call_async(self, service: str):
        """Call /policy_node/<service> (reset | release_estop); the future, or None when the
        node has no such service."""
        client = self.clients[service]
        if not client.wait_for_service(timeout_sec=3.0):
            return None
        return client.call_async(self.msg["Trigger"].Request())

    def reset_async(self):
        return self.call_async("reset")

    def service_names(self) -> list[str]:
        """The services the policy node offers (its servers: this client's own clients would show
        up in the graph-wide list too)."""
        try:
            return sorted(name for name, _ in self.node.get_service_names_and_types_by_node("policy_node", "/"))
        except Exception:  # not discovered (yet)
            return []

    def invented(self, audits: list) -> list[str]:
        """Audit states (q, dq) that this client never published (new code only)."""
        if self.base is None:
            return []
        out = []
        for _, a in audits:
            for k, (q, dq) in enumerate(zip(a.get("q", ()), a.get("dq", ()))):
                i = int(self.act_idx[k]) if k < len(self.act_idx) else k
                if math.isfinite(q) and q not in self.base.published_q[i]:
                    out.append(f"seq {int(a.get('seq', -1))}: q[{k}] = {q}")
                if math.isfinite(dq) and dq not in self.base.published_dq[i]:
                    out.append(f"seq {int(a.get('seq', -1))}: dq[{k}] = {dq}")
        return out

    def close(self) -> None:
        self._stop.set()
        self.pub_thread.join(2.0)
        if self.base is not None:
            self.base.close()
            return
        self.spin_thread.join(2.0)
        try:
            self.executor.shutdown()
            self.node.destroy_node()
        finally:
            self.ctx.try_shutdown()


# ----------------------------------------------------------------------------- the node
class NodeProc:
    """`roboreal deploy` in a subprocess (stdout+stderr to a log file); always stopped. The new
    code's `start_policy_node` / `stop_process` when the package has them (timer trigger,
    single-threaded executor: the node's defaults), else `python -c BOOT deploy ...`."""

    def __init__(self, bundle: Path, robot: str, logfile: Path, interface: str = "forward_command"):
        self.logfile = logfile
        self.t_start = time.monotonic()
        if PKG is not None:
            self._f = None
            self.p = PKG.start_policy_node(bundle, robot, logfile, interface, "timer/single")
        else:
            self._f = open(logfile, "w")
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            args = ["deploy", str(bundle), "--robot", robot, "--ros-args", "-p", "diagnostics_period:=0.5"]
            if interface != "forward_command":
                args += ["-p", f"command_interface:={interface}"]
            self.p = subprocess.Popen([sys.executable, "-c", BOOT, *args], stdout=self._f,
                                      stderr=subprocess.STDOUT, env=env)
        self.stopping = False

    def alive(self) -> bool:
        return self.p.poll() is None

    def text(self) -> str:
        try:
            if self._f is not None and not self._f.closed:
                self._f.flush()
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def size(self) -> int:
        return len(self.text())

    def stop(self, timeout: float = 8.0) -> dict:
        info = {"crashed": False, "rc": None, "exit_s": None, "killed": False}
        if self.p.poll() is not None:
            info["crashed"] = not self.stopping
            info["rc"] = self.p.returncode
        else:
            self.stopping = True
            try:
                os.kill(self.p.pid, signal.SIGCONT)  # in case a case left it stopped
            except ProcessLookupError:
                pass
            t0 = time.monotonic()
            if PKG is not None:
                rc = PKG.stop_process(self.p, timeout)  # SIGINT, SIGKILL after timeout
                info["killed"] = rc == -signal.SIGKILL
                info["exit_s"] = None if info["killed"] else time.monotonic() - t0
            else:
                self.p.send_signal(signal.SIGINT)
                try:
                    self.p.wait(timeout)
                    info["exit_s"] = time.monotonic() - t0
                except subprocess.TimeoutExpired:
                    self.p.kill()
                    self.p.wait(5)
                    info["killed"] = True
            info["rc"] = self.p.returncode
        if self._f is not None and not self._f.closed:
            self._f.close()
        return info


def scan_log(text: str) -> dict:
    lines = text.splitlines()
    warn = [ln for ln in lines if "[WARN]" in ln or "[ERROR]" in ln or "[FATAL]" in ln]
    rw = [ln for ln in lines if "RuntimeWarning" in ln]
    m = re.search(r"\[hostile_client\] roboreal from (\S+)", text)
    return {"roboreal_from": m.group(1) if m else None,
            "runtime_warnings": len(rw), "overflow": sum("overflow" in ln for ln in rw),
            "invalid_value": sum("invalid value" in ln for ln in rw),
            "python_warning_lines": [ln.strip() for ln in lines if re.search(r"\w+Warning:", ln)][:10],
            "tracebacks": text.count("Traceback (most recent call last)"),
            "warn_error_lines": len(warn), "warn_error_sample": list(dict.fromkeys(w.strip() for w in warn))[:8]}


# ----------------------------------------------------------------------------- checks
def check_commands(commands: list, modes: list, lim: Limits, t_ref: float = 0.0, label: str = "",
                   interface: str = "forward_command") -> dict:
    """The script's own checks over one node process's commands (in arrival order): finite,
    limits, rate and the APPROXIMATE strict torque (module docstring). position_gains: the
    positions are checked, torque~ with the gains on the wire."""
    n = lim.n
    gains_on_wire = interface == "position_gains"
    res = {"checked": 0, "finite": 0, "limits": 0, "rate": 0, "torque": 0, "torque3": 0, "torque_unchecked": 0,
           "shape": 0, "max_step": 0.0, "max_torque_excess": 0.0, "per_mode": {}, "examples": []}
    mode_times = [t for t, _ in modes]
    mode_names = [m for _, m in modes]
    prev = None
    for t, raw, states in commands:
        i = int(np.searchsorted(mode_times, t, side="right")) - 1
        mode = mode_names[i] if i >= 0 else "?"
        pm = res["per_mode"].setdefault(mode, {"checked": 0, "rate": 0, "limits": 0, "finite": 0, "torque": 0,
                                               "max_step": 0.0})
        res["checked"] += 1
        pm["checked"] += 1
        bad = []
        if raw.shape != ((3 * n,) if gains_on_wire else (n,)):
            res["shape"] += 1
            bad.append(f"shape {raw.shape}")
            prev = None
            continue
        v = raw[:n]
        kp, kd = (raw[n:2 * n], raw[2 * n:]) if gains_on_wire else (lim.kp, lim.kd)
        finite = bool(np.isfinite(raw).all())
        if not finite:
            res["finite"] += 1
            pm["finite"] += 1
            bad.append("non-finite")
        with np.errstate(all="ignore"):
            out = (v < lim.lo - 1e-9) | (v > lim.hi + 1e-9)
        if out.any():
            res["limits"] += 1
            pm["limits"] += 1
            bad.append(f"limits j{int(np.argmax(out))}={v[int(np.argmax(out))]:.4g}")
        if prev is not None and finite and np.isfinite(prev).all():
            step = np.abs(v - prev)
            ms = float(step.max())
            res["max_step"] = max(res["max_step"], ms)
            pm["max_step"] = max(pm["max_step"], ms)
            if ms > lim.max_step + 1e-9:
                res["rate"] += 1
                pm["rate"] += 1
                jj = int(np.argmax(step))
                qs = f", robot q {states[-1][1][jj]:.4g} dq {states[-1][2][jj]:.3g}" if states else ""
                bad.append(f"rate {lim.names[jj]} {prev[jj]:.4g} -> {v[jj]:.4g} ({ms:.4g} rad){qs}")
        prev = v
        # strict torque with the gains the robot applies and this client's last published states;
        # a NaN measurement has no torque to check (the node must latch on it: the other cases see
        # to that); inf or huge readings are checked (the robot's PD saturates on them)
        cands = [(q, dq) for _, q, dq in states if not (np.isnan(q).any() or np.isnan(dq).any())]
        if not cands or not finite:
            res["torque_unchecked"] += 1
        else:
            excess = []
            for q, dq in cands:
                with np.errstate(all="ignore"):
                    tau = np.abs(kp * (v - q) - kd * dq)
                    e = np.where(np.isfinite(tau), tau - lim.tau, np.inf)
                excess.append(float(np.max(e)))
            if excess[-1] > 1e-6:
                res["torque"] += 1
                pm["torque"] += 1
                res["max_torque_excess"] = max(res["max_torque_excess"], excess[-1])
                bad.append(f"torque~ +{excess[-1]:.4g}")
            if min(excess) > 1e-6:
                res["torque3"] += 1
        for kind in {b.split()[0] for b in bad}:  # up to 3 examples of each kind of violation
            if sum(e["kind"] == kind for e in res["examples"]) < 3:
                res["examples"].append({"kind": kind, "segment": label, "t": round(t - t_ref, 3), "mode": mode,
                                        "what": bad})
    return res


def wire_check(seg: dict, spec, lim: Limits, robot: "HostileRobot", t_ref: float) -> dict | None:
    """WireChecker over one node process's commands, each with its audit (the k-th command with
    audit seq k); None when the node published no audit (the old code)."""
    if WIRE is None or not seg["audits"]:
        return None
    info = seg["info"] or {}
    from roboreal.sim2real.safety.limits import SafetyLimits

    limits = None
    if info.get("safety_limits"):  # the node's own (possibly tightened) limits, as HostileRobot.attach
        limits = SafetyLimits.from_dict(info["safety_limits"])
        limits.check_within(SafetyLimits.from_spec(spec))
    interface = info.get("command_interface", seg["interface"])
    checker = WIRE.WireChecker(spec, lim.dt, limits, interface)
    names = list(info.get("audit_interventions", []))
    ws_flag = 1 << names.index("workspace") if "workspace" in names else None  # the box's audit bit
    by_seq = {}
    for _, a in seg["audits"]:
        by_seq.setdefault(int(a["seq"]), a)
    n = lim.n
    # the k-th command of the node process pairs with audit seq k; should this client have
    # missed the node's first commands (DDS discovery), the first one it got fixes the offset
    off = 0
    if seg["commands"] and 1 in by_seq and not np.array_equal(np.asarray(by_seq[1]["command"]),
                                                              seg["commands"][0][1][:n]):
        first = seg["commands"][0][1][:n]
        off = next((q - 1 for q in sorted(by_seq)[:50] if np.array_equal(np.asarray(by_seq[q]["command"]), first)), 0)
    checker.expected_seq = off + 1
    strict = {"torque_strict_audit": 0, "torque_strict_max_excess_nm": 0.0, "workspace_outranked": 0}
    modes = STEP.MODES
    per_cmd = []  # (t, mode, [problems], best_effort, rate ratio, strict torque exceeded, workspace flag, min kp on wire)
    examples: dict[str, list] = {}
    prev = None
    for k, (t, v, _) in enumerate(seg["commands"], start=1 + off):
        a = by_seq.get(k)
        mode = None
        if a is not None:
            mi = int(a["mode"])
            mode = modes[mi] if 0 <= mi < len(modes) else str(mi)
        be = checker.torque_best_effort
        found = checker.check(v, a, mode)
        p = v[:n]
        st_before, ws_before = strict["torque_strict_audit"], strict["workspace_outranked"]
        if a is not None and checker.position and p.shape == (n,):
            # the strict torque with the audit's state and gains: what the robot is asked for,
            # best effort and the workspace box's precedence included
            if ws_flag is not None and int(a.get("interventions", 0)) & ws_flag:
                strict["workspace_outranked"] += 1
            with np.errstate(all="ignore"):
                tau = np.abs(np.asarray(a["kp"]) * (p - np.asarray(a["q"])) - np.asarray(a["kd"]) * np.asarray(a["dq"]))
                exc = np.where(np.isfinite(tau), tau - checker.tau_max, -np.inf)
            if exc.size and float(exc.max()) > 1e-6:
                strict["torque_strict_audit"] += 1
                strict["torque_strict_max_excess_nm"] = max(strict["torque_strict_max_excess_nm"], float(exc.max()))
        ratio = float(np.max(np.abs(p - prev)) / checker.rate) if (
            prev is not None and p.shape == prev.shape and np.isfinite(p).all() and np.isfinite(prev).all()) else 0.0
        prev = p if p.shape == (n,) else None
        kp_wire = float(np.min(v[n:2 * n])) if v.shape == (3 * n,) else math.nan
        per_cmd.append((t, mode, found, checker.torque_best_effort > be, ratio,
                        strict["torque_strict_audit"] > st_before, strict["workspace_outranked"] > ws_before, kp_wire))
        for f in found:
            inv = f.split(":")[0]
            if len(examples.setdefault(inv, [])) < 3:
                examples[inv].append({"segment": seg["label"], "t": round(t - t_ref, 3), "mode": mode, "what": f})
    summary = checker.summary()
    summary["examples"] = examples
    summary["unpaired_commands"] = sum(1 for k in range(1 + off, len(seg["commands"]) + 1 + off) if k not in by_seq)
    summary["audits_without_command"] = sum(1 for s in by_seq if s <= off or s > len(seg["commands"]) + off)
    summary["commands_missed_at_start"] = off
    summary.update(strict)
    summary["interface"] = interface
    inv = robot.invented(seg["audits"])
    summary["invented"] = len(inv)
    summary["invented_examples"] = inv[:3]
    return {"summary": summary, "per_cmd": per_cmd}


def window_wire(seg: dict, t0: float, t1: float) -> dict | None:
    """WireChecker figures of the commands that arrived in [t0, t1] (per_cmd of wire_check)."""
    w = seg.get("wire")
    if w is None:
        return None
    rows = [r for r in w["per_cmd"] if t0 <= r[0] <= t1]
    viol = collections.Counter(f.split(":")[0] for r in rows for f in r[2])
    per_mode: dict = {}
    for _, mode, found, be, ratio, *_ in rows:
        pm = per_mode.setdefault(mode or "?", {"checked": 0, "violations": 0, "rate": 0, "torque": 0,
                                               "best_effort": 0, "max_rate_ratio": 0.0})
        pm["checked"] += 1
        pm["violations"] += bool(found)
        pm["rate"] += any(f.startswith("rate") for f in found)
        pm["torque"] += any(f.startswith("torque") for f in found)
        pm["best_effort"] += be
        pm["max_rate_ratio"] = max(pm["max_rate_ratio"], ratio)
    return {"checked": len(rows), "violations": {k: int(viol.get(k, 0)) for k in INVARIANTS},
            "best_effort": sum(r[3] for r in rows), "max_rate_ratio": max((r[4] for r in rows), default=0.0),
            "torque_strict_audit": sum(r[5] for r in rows), "workspace_outranked": sum(r[6] for r in rows),
            "kp_wire_min": min((r[7] for r in rows if not math.isnan(r[7])), default=None),
            "per_mode": per_mode}


def merge_checks(parts: list[dict]) -> dict:
    out = {k: 0 for k in ("checked", "finite", "limits", "rate", "torque", "torque3", "torque_unchecked", "shape")}
    out.update(max_step=0.0, max_torque_excess=0.0, per_mode={}, examples=[])
    for p in parts:
        for k in ("checked", "finite", "limits", "rate", "torque", "torque3", "torque_unchecked", "shape"):
            out[k] += p[k]
        out["max_step"] = max(out["max_step"], p["max_step"])
        out["max_torque_excess"] = max(out["max_torque_excess"], p["max_torque_excess"])
        for mode, pm in p["per_mode"].items():
            o = out["per_mode"].setdefault(mode, {"checked": 0, "rate": 0, "limits": 0, "finite": 0, "torque": 0,
                                                  "max_step": 0.0})
            for k in ("checked", "rate", "limits", "finite", "torque"):
                o[k] += pm[k]
            o["max_step"] = max(o["max_step"], pm["max_step"])
        for e in p["examples"]:
            if sum(x["kind"] == e["kind"] for x in out["examples"]) < 3:
                out["examples"].append(e)
    return out


# ----------------------------------------------------------------------------- one case
class CaseRun:
    def __init__(self, letter: str, robot: str, client: HostileRobot, bundle: Path, lim: Limits, logdir: Path,
                 timeout: float, spec=None):
        self.letter, self.robot, self.client, self.bundle, self.lim = letter, robot, client, bundle, lim
        self.spec = spec
        self.interface = "forward_command"
        self.logdir = logdir
        self.deadline = time.monotonic() + timeout
        self.t0 = time.monotonic()
        self.node: NodeProc | None = None
        self.label = ""
        self.segments: list[dict] = []
        self.result: dict = {}      # case-specific figures
        self.detect: str = "-"      # the table's "fault detected" cell
        self.notes: list[str] = []
        self.spurious: list[dict] = []
        self.error: str | None = None

    # ----- node lifetime
    def start_node(self, label: str, interface: str = "forward_command") -> None:
        self.stop_node()
        c = self.client
        c.state_fn = c.stamp_fn = None
        c.publish_joints = True
        c.quat_xyzw, c.gyro = (0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)
        c.rate = 100.0
        c.clear()
        self.label = label
        self.interface = interface
        self.node = NodeProc(self.bundle, self.robot, self.logdir / f"{self.letter}_{self.robot}_{label}.log",
                             interface)

    def stop_node(self, timeout: float = 8.0) -> dict | None:
        if self.node is None:
            return None
        node, self.node = self.node, None
        t_int = time.monotonic()
        info = node.stop(timeout)
        time.sleep(0.15)  # late messages
        snap = self.client.snapshot()
        text = node.text()
        after = [c for c in snap["commands"] if c[0] >= t_int]
        seg = {"label": self.label, "log": str(node.logfile), "node": info, "log_scan": scan_log(text),
               "commands": snap["commands"], "modes": snap["modes"], "diags": snap["diags"], "audits": snap["audits"],
               "info": snap["info"], "interface": self.interface,
               "shutdown": {"sigint_at": t_int, "exit_s": info["exit_s"], "final_commands": len(after),
                            "estop_published": any(m == "estop" for t, m in snap["modes"] if t >= t_int)},
               "log_tail": text.splitlines()[-6:] if info["crashed"] or info["rc"] not in (0, None) else []}
        # the node's step count vs commands received by then (a loss check)
        for td, d in reversed(snap["diags"]):
            steps = d["values"].get("steps")
            if steps is not None and steps.isdigit():
                seg["loss_check"] = {"node_steps": int(steps), "received_by_then": sum(c[0] <= td for c in snap["commands"])}
                break
        try:
            seg["wire"] = wire_check(seg, self.spec, self.lim, self.client, self.t0)
        except Exception as e:  # a bug in the check must not lose the case's other figures
            traceback.print_exc()
            seg["wire"] = None
            self.notes.append(f"{self.label}: WireChecker failed: {type(e).__name__}: {e}")
        self.segments.append(seg)
        return seg

    # ----- waiting
    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise CaseTimeout(f"case {self.letter} timed out")
        if self.node is not None and not self.node.stopping and not self.node.alive():
            last = next((ln for ln in reversed(self.node.text().splitlines()) if ln.strip()), "")
            raise NodeDied(f"node exited with {self.node.p.returncode}: {last[:200]}")

    def sleep(self, s: float) -> None:
        end = time.monotonic() + s
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.01, left))

    def wait(self, pred, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check()
            r = pred()
            if r:
                return r
            time.sleep(0.005)
        return None

    def wait_js(self, n: int) -> None:
        start = self.client.js_count
        self.wait(lambda: self.client.js_count >= start + n, 5.0)

    def log_size(self) -> int:
        return self.node.size() if self.node else 0

    def log_since(self, offset: int) -> str:
        return self.node.text()[offset:] if self.node else ""

    def call(self, service: str = "reset", timeout: float = 3.0) -> str | None:
        """Call /policy_node/<service> (reset | release_estop) and wait for the answer:
        "ok: ..." / "FAILED: ..." (refused), None (no such service or no answer)."""
        fut = self.client.call_async(service)
        if fut is None:
            return None
        self.wait(lambda: fut.done(), timeout)
        if not fut.done():
            return None
        r = fut.result()
        return f"{'ok' if r.success else 'FAILED'}: {r.message}"

    def reset(self, timeout: float = 3.0) -> str | None:
        """~/reset; with the new code, where the e-stop is latched, also ~/release_estop (only that
        releases it there)."""
        r = self.call("reset", timeout)
        if self.client.base is not None and self.client.mode()[0] == "estop":
            r2 = self.call("release_estop", timeout)
            r = f"{r}; release_estop {r2}"
        return r

    def reach_policy(self, timeout: float = 30.0, just_reset: bool = False) -> float:
        """Wait for mode "policy" and the end of the fade-in; a fault latched on the way (a
        scheduling stall on a loaded machine) is reset, up to 3 times, and recorded."""
        c = self.client
        t0 = entry = time.monotonic()
        resets = 0
        last_reset = entry if just_reset else -math.inf
        while True:
            self.check()
            now = time.monotonic()
            if now - t0 > timeout:
                raise CaseFailed(f"no policy mode within {timeout:.0f} s (modes: {[m for _, m in c.snapshot()['modes']]})")
            mode, since = c.mode()
            if mode == "policy" and now - since >= self.lim.fade + 0.3:
                return since
            if mode in FAULT_MODES and now - since > 0.3 and now - last_reset > 1.0:
                if resets >= 3:
                    raise CaseFailed(f"latched {mode} on the way to policy mode {resets} times")
                if since >= entry:  # not a fault the case itself caused before calling this
                    faults = next((d["values"].get("faults") for _, d in reversed(c.diags_since(since))), None)
                    self.spurious.append({"segment": self.label, "mode": mode, "faults": faults,
                                          "t": round(since - self.t0, 3)})
                self.reset()
                resets += 1
                t0 = last_reset = time.monotonic()
            time.sleep(0.01)

    # ----- detection
    def fault_reason(self, offset: int) -> str | None:
        """The latched faults the node logged with its first fault mode after log offset `offset`."""
        m = re.search(r"mode (hold|damping|estop)(?:: (.*))?", self.log_since(offset))
        return (m.group(2) or m.group(1)) if m else None

    def fault_reason_text(self, seg: dict, offset: int) -> str | None:
        """fault_reason for a stopped node (its segment's log)."""
        try:
            text = Path(seg["log"]).read_text(errors="replace")[offset:]
        except OSError:
            return None
        m = re.search(r"mode (hold|damping|estop)(?:: (.*))?", text)
        return (m.group(2) or m.group(1)) if m else None

    def fault_after(self, t: float, timeout: float = 0.0):
        """(latency s, mode) of the first fault mode after t, waiting up to timeout."""
        if timeout > 0:
            self.wait(lambda: self.client.first_mode_since(t), timeout)
        r = self.client.first_mode_since(t)
        return (r[0] - t, r[1]) if r else None

    def diag_since(self, t: float) -> dict:
        """What /diagnostics said after t: the first latched "faults" (not "none"), the last
        dropped.*.last_reason values, the largest "overruns" count (new code's keys; empty
        for the old code)."""
        out = {"faults": None, "faults_latency_s": None, "dropped": {}, "overruns": None}
        for td, d in self.client.diags_since(t):
            v = d["values"]
            if out["faults"] is None and v.get("faults", "none") != "none":
                out["faults"], out["faults_latency_s"] = v["faults"], td - t
            for key, val in v.items():
                if key.startswith("dropped.") and key.endswith(".last_reason") and val:
                    out["dropped"][key[len("dropped."):-len(".last_reason")]] = val
            if v.get("overruns", "").isdigit():
                out["overruns"] = max(out["overruns"] or 0, int(v["overruns"]))
        return out


def fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.0f}ms"


# ----------------------------------------------------------------------------- the cases
def case_A(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    j = lim.names.index(ATTACK_JOINT[h.robot])
    h.start_node("A")
    h.reach_policy()
    off = h.log_size()

    def reads(value):
        def fn(r):
            q = r.track()
            q[j] = value
            return q, np.zeros(lim.n)
        return fn

    t0 = time.monotonic()
    c.state_fn = reads(-10.0)
    h.wait_js(10)
    t1 = time.monotonic()
    c.state_fn = reads(1e308)
    h.wait_js(10)
    t2 = time.monotonic()
    c.state_fn = None
    h.sleep(1.5)
    f = h.fault_after(t0)
    dg = h.diag_since(t0)
    seg = h.stop_node()
    win = {k: window_wire(seg, *w) for k, w in (("minus10", (t0, t1 + 0.05)), ("1e308", (t1, t2 + 0.05)),
                                                ("after", (t2 + 0.05, math.inf)))}
    h.result.update(joint=lim.names[j], fault=f and {"latency_s": f[0], "mode": f[1], "why": h.fault_reason_text(seg, off)},
                    diagnostics=dg, windows={"minus10": [t0, t1], "1e308": [t1, t2], "after": [t2, time.monotonic()]},
                    window_wire=win)
    h.detect = (f"{f[1]} {fmt_ms(f[0])}" if f else "no") + (f"; diag faults: {dg['faults'][:60]}" if dg["faults"] else "")
    if win["minus10"] is not None:
        h.notes.append("per window (WireChecker): " + "; ".join(
            f"{k}: {w['checked']} cmds, viol {sum(w['violations'].values())}, max rate ratio {w['max_rate_ratio']:.3g}"
            for k, w in win.items()))


def case_B(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    j = lim.names.index(ATTACK_JOINT[h.robot])
    cells = []
    for how in ("nan", "estop"):
        h.start_node(f"B_{how}")
        h.reach_policy()
        base = c.track()
        t0 = time.monotonic()
        extra = None
        if how == "nan":
            def nan_fn(r):
                q = r.track()
                q[j] = math.nan
                return q, np.zeros(lim.n)
            c.state_fn = nan_fn
            h.wait_js(1)
            c.state_fn = None
            f = h.fault_after(t0, timeout=0.5)
            if f is None:  # one NaN sample between two control ticks can go unseen: latch it with 5 more
                t_extra = time.monotonic()
                c.state_fn = nan_fn
                h.wait_js(5)
                c.state_fn = None
                f2 = h.fault_after(t_extra, timeout=1.0)
                extra = {"single_nan_latched": False, "after_5_more": f2 and {"latency_s": f2[0], "mode": f2[1]}}
                f = None
        else:
            c.estop()
            f = h.fault_after(t0, timeout=1.0)

        def glitch(r):
            q = np.clip(base + r.rng.uniform(-2.0, 2.0, lim.n), lim.raw_lo, lim.raw_hi)
            return q, np.zeros(lim.n)
        tg = time.monotonic()
        c.state_fn = glitch
        h.sleep(2.0)
        c.state_fn = None
        h.sleep(0.3)
        t_end = time.monotonic()
        modes = [m for _, m in c.modes_since(tg)]
        seg = h.stop_node()
        chk = check_commands([x for x in seg["commands"] if tg <= x[0] <= t_end], seg["modes"], lim,
                             interface=seg["interface"])
        ww = window_wire(seg, tg, t_end)
        h.result[how] = {"latch": f and {"latency_s": f[0], "mode": f[1]}, "nan_retry": extra, "glitch_modes": modes,
                         "glitch_window": {"checked": chk["checked"], "rate": chk["rate"], "max_step": chk["max_step"],
                                           "torque": chk["torque"], "per_mode": chk["per_mode"]},
                         "glitch_window_wire": ww}
        if extra is not None:
            f2 = extra["after_5_more"]
            cells.append(f"{how}: single NaN MISSED; 5 more -> " + (f"{f2['mode']}" if f2 else "no"))
        else:
            cells.append(f"{how}: {f[1]} {fmt_ms(f[0])}" if f else f"{how}: no")
        h.notes.append(f"{how}: during glitch " + ", ".join(
            f"{m}: {pm['rate']}/{pm['checked']} rate viol, max step {pm['max_step']:.3g}"
            for m, pm in chk["per_mode"].items()) + ("" if ww is None else "; WireChecker: " + ", ".join(
                f"{m}: {pm['violations']}/{pm['checked']} viol (rate {pm['rate']}, torque {pm['torque']}), "
                f"best-effort {pm['best_effort']}, max rate ratio {pm['max_rate_ratio']:.3g}"
                for m, pm in ww["per_mode"].items())))
    h.detect = "; ".join(cells)


C_LAGS = (0.5, 1.5)  # rad, each held 2 s after its ramp
C_HOLD = 2.0


def ramp_time(lim: Limits, change: float) -> float:
    """s to change the lag by `change` rad at half the plausible joint speed: as fast as a
    real joint could (faster than the rate limit), never an implausible encoder jump."""
    return abs(change) / (0.5 * lim.plausible_speed)


def lag_attack(h: CaseRun, interface: str) -> None:
    """C and I: the state lags the commands (q = command - lag, dq = +-5 rad/s) in policy mode."""
    c, lim = h.client, h.lim
    h.start_node(h.letter, interface)
    h.reach_policy()
    signs = np.where(np.arange(lim.n) % 2 == 0, 1.0, -1.0)
    off = h.log_size()
    lag = {"from": 0.0, "to": 0.0, "t": time.monotonic(), "ramp": 1.0}

    def current_lag() -> float:
        x = min(1.0, (time.monotonic() - lag["t"]) / max(lag["ramp"], 1e-9))
        return lag["from"] + x * (lag["to"] - lag["from"])

    def move_lag(to: float) -> float:
        now_lag = current_lag()
        lag.update({"from": now_lag, "to": to, "t": time.monotonic(), "ramp": ramp_time(lim, to - now_lag)})
        return lag["ramp"]

    def lagging(r):
        return np.clip(r.track() - current_lag(), lim.raw_lo, lim.raw_hi), 5.0 * signs
    t0 = time.monotonic()
    windows = []
    c.state_fn = lagging
    for to in C_LAGS:
        tw = time.monotonic()
        h.sleep(move_lag(to) + C_HOLD)
        windows.append((to, tw, time.monotonic()))
    h.sleep(move_lag(0.0) + 0.05)  # back to tracking, plausibly fast
    c.state_fn = None
    h.sleep(0.5)
    f = h.fault_after(t0)
    dg = h.diag_since(t0)
    seg = h.stop_node()
    why = h.fault_reason_text(seg, off)
    res = {"fault": f and {"latency_s": f[0], "mode": f[1], "why": why}, "diagnostics": dg, "interface": interface,
           "modes": [m for t, m in seg["modes"] if t >= t0], "windows": {}}
    for to, a, b in windows:
        win = check_commands([x for x in seg["commands"] if a <= x[0] <= b + 0.05], seg["modes"], lim,
                             interface=seg["interface"])
        ww = window_wire(seg, a, b + 0.05)
        res["windows"][f"lag_{to}"] = {"approx": {k: win[k] for k in ("checked", "torque", "torque3", "rate",
                                                                       "max_torque_excess")}, "wire": ww}
        h.notes.append(f"lag {to} rad ({interface}): torque~ {win['torque']}/{win['checked']}, torque~3 "
                       f"{win['torque3']}, max excess~ {win['max_torque_excess']:.4g} Nm" + (
                           "" if ww is None else f"; WireChecker torque viol {ww['violations']['torque']}, velocity "
                           f"viol {ww['violations']['velocity']}, best-effort {ww['best_effort']}/{ww['checked']}, "
                           f"workspace outranked torque {ww['workspace_outranked']}, strict torque with the audit's "
                           f"state {ww['torque_strict_audit']}"
                           + (f", min kp on the wire {ww['kp_wire_min']:.4g}" if ww["kp_wire_min"] is not None else "")
                           + f", modes {sorted(ww['per_mode'])}"))
    h.result.update(res)
    h.detect = (f"{f[1]} {fmt_ms(f[0])}" if f else "no") + (f" ({str(why)[:60]})" if f and why else "")


def case_C(h: CaseRun) -> None:
    lag_attack(h, "forward_command")


def case_I(h: CaseRun) -> None:
    lag_attack(h, "position_gains")


D_FIELDS = {  # sub-part -> (keywords a warning naming the field would contain, robots)
    "joints_pm10": (("position", "joint"), ROBOTS),
    "joints_1e308": (("position", "joint"), ROBOTS),
    "velocity_1e308": (("velocit",), ROBOTS),
    "gyro_1e30": (("angular", "gyro", "imu"), ("go1",)),
    "quat_norm3": (("orientation", "quaternion", "imu"), ("go1",)),
}


D_DIAG_FIELD = {"joints_pm10": "joint_states.position", "joints_1e308": "joint_states.position",  # new code's names
                "velocity_1e308": "joint_states.velocity", "gyro_1e30": "imu.angular_velocity",
                "quat_norm3": "imu.orientation"}


def case_D(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    alt = np.where(np.arange(lim.n) % 2 == 0, 10.0, -10.0)
    cells = []
    for sub, (keys, robots) in D_FIELDS.items():
        if h.robot not in robots:
            continue
        try:
            h.start_node(f"D_{sub}")
            h.reach_policy()
            off = h.log_size()
            t0 = time.monotonic()
            if sub == "joints_pm10":
                c.state_fn = lambda r: (alt.copy(), np.zeros(lim.n))
            elif sub == "joints_1e308":
                c.state_fn = lambda r: (np.full(lim.n, 1e308), np.zeros(lim.n))
            elif sub == "velocity_1e308":
                c.state_fn = lambda r: (r.track(), np.full(lim.n, 1e308))
            elif sub == "gyro_1e30":
                c.gyro = (1e30, 1e30, 1e30)
            elif sub == "quat_norm3":
                c.quat_xyzw = (0.0, 0.0, 0.0, 3.0)
            h.sleep(0.5)
            c.state_fn = None
            c.gyro, c.quat_xyzw = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0)
            h.sleep(1.0)
            f = h.fault_after(t0)
            new = h.log_since(off)
            lines = [ln.strip() for ln in new.splitlines()
                     if "[WARN]" in ln or "[ERROR]" in ln or "Warning" in ln]
            named = [ln for ln in lines if any(k in ln.lower() for k in keys)]
            rw = [ln for ln in new.splitlines() if "RuntimeWarning" in ln]
            dg = h.diag_since(t0)
            diag_named = bool(dg["faults"]) and D_DIAG_FIELD[sub] in dg["faults"]
            h.result[sub] = {"fault": f and {"latency_s": f[0], "mode": f[1], "why": h.fault_reason(off)},
                             "modes": [m for t, m in c.modes_since(t0)], "diagnostics": dg,
                             "diagnostics_name_field": diag_named,
                             "warning_names_field": bool(named), "warning_lines": lines[:6],
                             "runtime_warnings": len(rw), "overflow_warnings": sum("overflow" in ln for ln in rw),
                             "runtime_warning_lines": [ln.strip() for ln in rw][:4]}
            cells.append((f"{sub}: {f[1]} {fmt_ms(f[0])}" if f else f"{sub}: no") + (" (named)" if diag_named else ""))
            h.notes.append(f"{sub}: left policy: {f[1] + ' after ' + fmt_ms(f[0]) if f else 'no'}; "
                           f"warning naming the field: {'yes' if named else 'no'}; diagnostics faults naming it: "
                           f"{'yes (' + dg['faults'][:100] + ')' if diag_named else 'no'}; "
                           f"RuntimeWarnings in log: {len(rw)} (overflow {sum('overflow' in ln for ln in rw)})")
        except NodeDied as e:
            h.result[sub] = {"error": f"node died: {e}"}
            cells.append(f"{sub}: CRASH")
            h.notes.append(f"{sub}: node died ({e})")
        finally:
            h.stop_node()
    h.detect = "; ".join(cells)


E_RAMP = 0.5  # s to move the displacement in / out (faster would be an implausible encoder jump)


def case_E(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    h.start_node("E")
    h.reach_policy()
    s = np.where(lim.default - lim.raw_lo > lim.raw_hi - lim.default, -1.0, 1.0)  # toward the side with room
    disp = {"from": 0.0, "to": 0.5, "t": time.monotonic()}

    def amount() -> float:
        x = min(1.0, (time.monotonic() - disp["t"]) / E_RAMP)
        return disp["from"] + x * (disp["to"] - disp["from"])

    c.state_fn = lambda r: (np.clip(r.track() + amount() * s, lim.raw_lo, lim.raw_hi), np.zeros(lim.n))
    h.sleep(E_RAMP + 0.2)
    t0 = time.monotonic()
    futs = []
    for _ in range(20):
        futs.append(c.reset_async())
        h.sleep(0.1)
    h.sleep(0.5)
    t1 = time.monotonic()
    answered = sum(bool(f and f.done()) for f in futs)
    ok = sum(bool(f and f.done() and f.result().success) for f in futs)
    disp.update({"from": 0.5, "to": 0.0, "t": time.monotonic()})
    h.sleep(E_RAMP + 0.1)
    c.state_fn = None
    h.sleep(0.3)
    mode_before_estop = c.mode()[0]
    # e-stop, then one reset
    t_e = time.monotonic()
    c.estop()
    latched = h.fault_after(t_e, timeout=1.0)
    h.sleep(0.3)
    t_r = time.monotonic()
    msg = h.call("reset")
    h.sleep(1.0)
    after = [m for _, m in c.modes_since(t_r)]
    released = bool(after) and after[-1] != "estop"
    services = [n for n in c.service_names() if n.startswith("/policy_node/")]
    has_release = "/policy_node/release_estop" in services
    rel = None
    if has_release and not released:
        # release / reset while every joint reads 1 rad/s (> reset_max_joint_speed), then at rest
        c.state_fn = lambda r: (r.track(), np.full(lim.n, 1.0))
        h.sleep(0.2)
        rel_moving = h.call("release_estop")
        reset_moving = h.call("reset")
        mode_moving = c.mode()[0]
        c.state_fn = None
        h.sleep(0.2)
        t_rel = time.monotonic()
        rel_rest = h.call("release_estop")
        back = h.wait(lambda: c.mode()[0] == "policy" and c.mode()[1] >= t_rel and c.mode(), 10.0)
        rel = {"release_moving": rel_moving, "reset_moving": reset_moving, "mode_after_moving_calls": mode_moving,
               "release_rest": rel_rest, "modes_after_release": [m for _, m in c.modes_since(t_rel)],
               "policy_after_s": back and back[1] - t_rel}
        h.sleep(0.5)
    seg = h.stop_node()
    win = check_commands([x for x in seg["commands"] if t0 <= x[0] <= t1], seg["modes"], lim,
                         interface=seg["interface"])
    ww = window_wire(seg, t0, t1)
    h.result.update(spam={"calls": 20, "answered": answered, "success": ok, "rate": win["rate"],
                          "checked": win["checked"], "max_step": win["max_step"], "torque": win["torque"],
                          "wire": ww},
                    mode_before_estop=mode_before_estop,
                    estop={"latched": latched and {"latency_s": latched[0], "mode": latched[1]},
                           "reset_reply": msg, "modes_after_reset": after, "released_by_reset": released},
                    release=rel, services=services, release_estop_service=has_release)

    def short(x):
        return "no answer" if x is None else ("ok" if x.startswith("ok") else "REFUSED")
    h.detect = f"reset releases estop: {'YES' if released else 'no'}"
    if rel is not None:
        h.detect += (f"; moving: release {short(rel['release_moving'])}, reset {short(rel['reset_moving'])}; at rest: "
                     f"release {short(rel['release_rest'])}"
                     + (f" -> policy {rel['policy_after_s']:.1f}s" if rel["policy_after_s"] is not None else
                        " -> NO policy"))
    h.notes.append(f"reset spam: {ok}/20 answered ok; {win['rate']}/{win['checked']} rate viol, "
                   f"max step {win['max_step']:.3g} rad" + ("" if ww is None else
                   f" (WireChecker: {sum(ww['violations'].values())} viol, max rate ratio {ww['max_rate_ratio']:.3g})")
                   + f"; mode before the e-stop {mode_before_estop}; e-stop then reset -> modes {after} "
                   f"(reply: {msg}); services "
                   f"{[x.split('/')[-1] for x in services if not x.split('/')[-1].startswith(('get_', 'set_', 'list_', 'describe_'))]}")
    if rel is not None:
        h.notes.append(f"while moving (dq 1 rad/s): release_estop -> {rel['release_moving']}; reset -> "
                       f"{rel['reset_moving']}; at rest: release_estop -> {rel['release_rest']}; modes then "
                       f"{rel['modes_after_release']}")


F_SUBS = ("stale_1s", "frozen", "future_1s", "zero")
SILENCE_REPS = 3


def case_F(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    cells = []
    for sub in F_SUBS:
        try:
            h.start_node(f"F_{sub}")
            h.reach_policy()
            off = h.log_size()
            t0 = time.monotonic()
            frozen_ns = c.node.get_clock().now().nanoseconds
            if sub == "stale_1s":
                q_old = c.track()
                c.state_fn = lambda r, q_old=q_old: (q_old.copy(), np.zeros(lim.n))
                c.stamp_fn = lambda ns: ns - 1_000_000_000
            elif sub == "frozen":
                c.stamp_fn = lambda ns, f=frozen_ns: f
            elif sub == "future_1s":
                c.stamp_fn = lambda ns: ns + 1_000_000_000
            else:
                c.stamp_fn = lambda ns: 0
            h.sleep(2.0)
            c.stamp_fn = c.state_fn = None
            h.sleep(0.3)
            f = h.fault_after(t0)
            diag_hit = None
            lat_seen = []
            base = [d for t, d in c.diags_since(0) if t < t0]
            base_level = base[-1]["level"] if base else 0
            for td, d in c.diags_since(t0 + 0.05):
                v = d["values"]
                lat_seen.append(v.get("latency_mean_ms"))
                text = " ".join([d["message"], *v.keys(), *(str(x) for x in v.values())]).lower()
                if (d["level"] > base_level or v.get("faults", "none") != "none"
                        or re.search(r"stamp|stale|future|clock|skew", text)):
                    diag_hit = diag_hit or (td - t0, d["level"], d["message"], v.get("faults"))
            why = h.fault_reason(off)
            dg = h.diag_since(t0)
            h.result[sub] = {"fault": f and {"latency_s": f[0], "mode": f[1], "why": why},
                             "modes": [m for _, m in c.modes_since(t0)],
                             "diagnostics_report": diag_hit and {"latency_s": diag_hit[0], "level": diag_hit[1],
                                                                 "message": diag_hit[2], "faults": diag_hit[3]},
                             "diagnostics": dg, "diag_latency_mean_ms": lat_seen[:6]}
            wd = " (watchdog)" if f and why and "watchdog" in why.lower() else ""
            det = (f"{f[1]} {fmt_ms(f[0])}{wd}" if f else
                   f"diag {fmt_ms(diag_hit[0])}" if diag_hit else "no")
            if dg["dropped"].get("JointState"):
                det += " +refused"
            cells.append(f"{sub}: {det}")
            h.notes.append(f"{sub}: mode {'left policy: ' + f[1] + ' (' + str(why) + ')' if f else 'stayed policy'}; diagnostics "
                           f"{'reported (' + str(diag_hit[2]) + ')' if diag_hit else 'silent'}; faults "
                           f"{dg['faults']!r}; dropped reasons {dg['dropped']}; latency_mean_ms seen {lat_seen[:3]}")
        except NodeDied as e:
            h.result[sub] = {"error": f"node died: {e}"}
            cells.append(f"{sub}: CRASH")
        finally:
            h.stop_node()
    h.detect = "; ".join(cells)


def case_G(h: CaseRun) -> None:
    c, lim = h.client, h.lim
    h.start_node("G_stall")
    c.rate = 200.0
    h.reach_policy()
    stalls = []
    t_begin = time.monotonic()
    for k in range(10):
        mode_before = c.mode()[0]
        t0 = time.monotonic()
        os.kill(h.node.p.pid, signal.SIGSTOP)
        time.sleep(0.15)
        os.kill(h.node.p.pid, signal.SIGCONT)
        t1 = time.monotonic()
        h.sleep(0.4)
        f = h.fault_after(t0)
        faults = None
        if f:
            faults = next((d["values"].get("faults") for td, d in c.diags_since(t0)
                           if d["values"].get("faults", "none") != "none"), None)
            h.reset()
        stalls.append({"mode_before": mode_before, "stopped_s": t1 - t0,
                       "latched": f and {"latency_s": f[0], "mode": f[1]}, "faults": faults})
        h.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    h.sleep(0.6)  # one more diagnostics message (period 0.5 s) after the last stall
    dg = h.diag_since(t_begin)
    seg = h.stop_node()
    wd_lines = [ln for ln in Path(seg["log"]).read_text(errors="replace").splitlines()
                if "watchdog" in ln.lower() and ("[WARN]" in ln or "[ERROR]" in ln)]
    latches = sum(1 for s in stalls if s["latched"])
    # real silence, SILENCE_REPS times (a reset between): the latency depends on the tick's phase
    h.start_node("G_silence")
    required = lim.wd_js + lim.dt
    silences = []
    for rep in range(SILENCE_REPS):
        if rep:
            h.reset()
        h.reach_policy(just_reset=bool(rep))
        time.sleep(0.3)
        c.publish_joints = False
        time.sleep(0.02)
        t_last = c.js_last_time
        f = h.fault_after(t_last, timeout=2.0)
        c.publish_joints = True
        silences.append({"latency_s": f and f[0], "mode": f and f[1], "meets": bool(f and f[0] <= required)})
        h.sleep(0.3)
    h.stop_node()
    lats = [x["latency_s"] for x in silences if x["latency_s"] is not None]
    modes = sorted({x["mode"] for x in silences if x["mode"]})
    h.result.update(stalls=stalls, latches=latches, watchdog_log_lines=wd_lines[:5], stall_diagnostics=dg,
                    silence={"runs": silences, "required_s": required, "max_s": max(lats) if lats else None,
                             "min_s": min(lats) if lats else None, "detected": f"{len(lats)}/{len(silences)}",
                             "meets": all(x["meets"] for x in silences)})
    h.detect = (f"stall latches {latches}/10" + (f" (overruns {dg['overruns']})" if dg["overruns"] is not None else "")
                + f"; silence->{','.join(modes) or 'none'} "
                f"{fmt_ms(min(lats) if lats else None)}..{fmt_ms(max(lats) if lats else None)} "
                f"({len(lats)}/{len(silences)}; req <= {fmt_ms(required)})")
    h.notes.append(f"stalls: modes before {[s['mode_before'] for s in stalls]}; latched "
                   f"{[s['latched']['mode'] if s['latched'] else '-' for s in stalls]}")


def case_H(h: CaseRun) -> None:
    h.start_node("H")
    h.reach_policy()
    seg = h.stop_node(timeout=10.0)
    sd = seg["shutdown"]
    h.result.update(shutdown=sd, rc=seg["node"]["rc"], killed=seg["node"]["killed"])
    h.detect = (f"exit {sd['exit_s']:.2f}s" if sd["exit_s"] is not None else "no exit (killed)") + \
        f"; final cmd {'yes' if sd['final_commands'] else 'NO'}; estop {'yes' if sd['estop_published'] else 'NO'}"


CASE_FUNCS = {"A": case_A, "B": case_B, "C": case_C, "D": case_D, "E": case_E, "F": case_F, "G": case_G,
              "H": case_H, "I": case_I}
CASE_TITLES = {"A": "rate limit, -10 / 1e308 reading", "B": "fault + glitching encoders",
               "C": "torque, lagging state", "D": "implausible sensors", "E": "reset spam / e-stop release",
               "F": "header stamps", "G": "node stall / silence", "H": "SIGINT shutdown",
               "I": "torque, lagging, position_gains"}


# ----------------------------------------------------------------------------- main
def make_bundles(root: Path, robots) -> dict[str, Path]:
    """One tiny bundle per robot, trained and exported in a subprocess (torch stays out of this
    process) by the roboreal on the path: the new code's `hostile.tiny_bundle`, else the same
    one-iteration runs (RUNS)."""
    code = (
        "import sys, json\n"
        "try:\n"
        "    from roboreal.sim2real.nodes.hostile import tiny_bundle\n"
        "except ImportError:\n"
        "    from roboreal.agents.run_config import resolve_config\n"
        "    from roboreal.agents.runner import train\n"
        "    from roboreal.sim2real.bundle import export_bundle\n"
        f"    runs = {RUNS!r}\n"
        "    def tiny_bundle(robot, root):\n"
        "        task, algo, over = runs[robot]\n"
        "        run = root + '/' + robot\n"
        "        train(resolve_config(task, algo, over, num_envs=2, total_steps=1, seed=0), run, progress=False)\n"
        "        return export_bundle(run)\n"
        "out = {robot: str(tiny_bundle(robot, sys.argv[1])) for robot in sys.argv[2:]}\n"
        "print('BUNDLES=' + json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", code, str(root), *robots], capture_output=True, text=True,
                       env=dict(os.environ), timeout=600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BUNDLES=")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"making the bundles failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return {k: Path(v) for k, v in json.loads(line[len("BUNDLES="):]).items()}


def merge_wire(parts: list[dict]) -> dict | None:
    """The segments' WireChecker summaries, summed (None: no segment had audits)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    out = {"commands": 0, "audited": 0, "violations": {k: 0 for k in INVARIANTS}, "torque_best_effort": 0,
           "max_rate_ratio": 0.0, "unpaired_commands": 0, "audits_without_command": 0, "invented": 0,
           "commands_missed_at_start": 0, "torque_strict_audit": 0, "torque_strict_max_excess_nm": 0.0,
           "workspace_outranked": 0,
           "modes": collections.Counter(), "examples": {}, "invented_examples": [],
           "interfaces": sorted({p["interface"] for p in parts})}
    for p in parts:
        for k in ("commands", "audited", "torque_best_effort", "unpaired_commands", "audits_without_command",
                  "invented", "commands_missed_at_start", "torque_strict_audit", "workspace_outranked"):
            out[k] += p[k]
        out["torque_strict_max_excess_nm"] = max(out["torque_strict_max_excess_nm"], p["torque_strict_max_excess_nm"])
        for k in INVARIANTS:
            out["violations"][k] += p["violations"].get(k, 0)
        out["max_rate_ratio"] = max(out["max_rate_ratio"], p["max_rate_ratio"])
        out["modes"].update(p["modes"])
        for inv, exs in p["examples"].items():
            out["examples"].setdefault(inv, [])
            out["examples"][inv] += exs[:3 - len(out["examples"][inv])]
        out["invented_examples"] += p["invented_examples"][:3 - len(out["invented_examples"])]
    out["modes"] = dict(out["modes"])
    return out


def summarize(h: CaseRun) -> dict:
    parts = [check_commands(s["commands"], s["modes"], h.lim, h.t0, s["label"], s["interface"]) for s in h.segments]
    chk = merge_checks(parts) if parts else merge_checks([])
    wire = merge_wire([s["wire"] and s["wire"]["summary"] for s in h.segments])
    seq, entries = [], collections.Counter()
    for s in h.segments:
        ms = []
        for _, m in s["modes"]:
            if not ms or ms[-1] != m:
                ms.append(m)
                entries[m] += 1
        seq.append(">".join(ms))
    scans = [s["log_scan"] for s in h.segments]
    crashed = [s["label"] for s in h.segments if s["node"]["crashed"]]
    return {
        "case": h.letter, "title": CASE_TITLES[h.letter], "robot": h.robot, "error": h.error,
        "checks": chk, "wire": wire, "modes_seen": seq, "mode_entries": dict(entries), "fault_detected": h.detect,
        "notes": h.notes, "node_crashed": crashed, "spurious_latches_before_attack": h.spurious,
        "runtime_warnings": sum(s["runtime_warnings"] for s in scans),
        "overflow_warnings": sum(s["overflow"] for s in scans),
        "tracebacks": sum(s["tracebacks"] for s in scans),
        "roboreal_from": sorted({s["roboreal_from"] for s in scans if s["roboreal_from"]}),
        "result": h.result, "duration_s": time.monotonic() - h.t0,
        "segments": [{"label": s["label"], "log": s["log"], "node": s["node"], "shutdown": s["shutdown"],
                      "interface": s["interface"],
                      "checks": {k: v for k, v in p.items() if k != "examples"},
                      "wire": s["wire"] and {k: v for k, v in s["wire"]["summary"].items()},
                      "commands": len(s["commands"]), "audits": len(s["audits"]), "loss_check": s.get("loss_check"),
                      "log_scan": s["log_scan"], "log_tail": s["log_tail"],
                      "modes": [(round(t - h.t0, 3), m) for t, m in s["modes"]]} for s, p in zip(h.segments, parts)],
    }


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else str(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x


def table(rows: list[dict], limits: dict) -> str:
    head = ["case", "robot", "cmds", "audited", "finite", "limits", "rate", "gains", "torque", "veloc", "audit",
            "best-eff", "torque~", "torque~3", "max step (allowed)", "rate ratio", "crashed", "RtWarn", "TB",
            "modes seen", "fault detected"]
    body = []
    for r in rows:
        k, w = r["checks"], r["wire"]
        allowed = limits[r["robot"]]["max_step_rad"]
        if w is not None:
            v = w["violations"]
            inv = [str(w["commands"]), str(w["audited"]), str(v["finite"]), str(v["position_limits"]), str(v["rate"]),
                   str(v["gains"]), str(v["torque"]), str(v["velocity"]), str(v["audit"]), str(w["torque_best_effort"])]
            ratio = f"{w['max_rate_ratio']:.3g}"
        else:  # the old code: no audit, the script's own finite / limits / rate checks
            inv = [str(k["checked"]), "0", str(k["finite"]), str(k["limits"]), str(k["rate"]), "-", "-", "-", "-", "-"]
            ratio = f"{k['max_step'] / allowed:.3g}" if allowed else "-"
        body.append([f"{r['case']} {r['title']}", r["robot"], *inv, str(k["torque"]), str(k["torque3"]),
                     f"{k['max_step']:.3g} ({allowed:.3g})", ratio,
                     ("yes: " + ",".join(r["node_crashed"])) if r["node_crashed"] else "no",
                     f"{r['runtime_warnings']} ({r['overflow_warnings']} ovf)", str(r["tracebacks"]),
                     " ".join(f"{m}x{n}" if n > 1 else m for m, n in r["mode_entries"].items() if m != "waiting"),
                     (f"ERROR: {r['error']} / " if r["error"] else "") + r["fault_detected"]])
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(head))]
    widths = [min(w, 60) for w in widths]

    def line(cells):
        return " | ".join(c.ljust(w) if len(c) <= w else c for c, w in zip(cells, widths))
    out = [line(head), "-+-".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out.append("")
    out.append("cmds: commands received (all modes, all node processes of the case); audited: those checked with "
               "their /policy_node/audit record. finite .. audit: commands violating each WireChecker invariant "
               "(roboreal.sim2real.safety.wire; rows without audits - the old code - count finite / limits / rate "
               "with this script's own equivalent checks, '-': not checkable without the audit); best-eff: "
               "commands where the torque bound gave way to the rate window on fixed gains (not violations); "
               "torque~ / torque~3: the APPROXIMATE STRICT torque check (robot.yaml's fixed gains, or the wire's "
               "with position_gains; q/dq = the last state this client published / each of the last 3), kept to "
               "compare with the old code; max step: largest |cmd_k - cmd_k-1| of any joint (allowed: "
               "max_target_rate*dt); rate ratio: that / allowed (WireChecker's max_rate_ratio with audits); RtWarn: "
               "RuntimeWarning lines in the node logs (overflow ones); TB: tracebacks in the node logs; modes seen: "
               "mode entries over the case's node processes (xN: N times); fault detected: the case's own figure "
               "(see the script's docstring)")
    out.append("")
    out.append("notes:")
    for r in rows:
        for n in r["notes"]:
            out.append(f"  {r['case']} {r['robot']}: {n}")
        w = r["wire"]
        if w is not None:
            for inv, exs in w["examples"].items():
                for e in exs:
                    out.append(f"  {r['case']} {r['robot']}: VIOLATION {e['segment']} t={e['t']}s mode {e['mode']}: "
                               f"{e['what']}")
            if w["torque_strict_audit"]:
                out.append(f"  {r['case']} {r['robot']}: strict torque with the audit's state and applied gains "
                           f"exceeded on {w['torque_strict_audit']} commands (max excess "
                           f"{w['torque_strict_max_excess_nm']:.4g} Nm): WireChecker allowed them as best effort "
                           f"({w['torque_best_effort']}) or because the workspace box outranked the torque bound "
                           f"({w['workspace_outranked']} commands with the workspace flag)")
            if w["invented"] or w["unpaired_commands"] or w["audits_without_command"] or w["commands_missed_at_start"]:
                out.append(f"  {r['case']} {r['robot']}: audit: {w['commands_missed_at_start']} commands missed at a "
                           f"node's start, {w['unpaired_commands']} commands without audit, "
                           f"{w['audits_without_command']} audits without command, {w['invented']} audit states "
                           f"never published {w['invented_examples']}")
        elif r["checks"]["examples"] and (r["checks"]["rate"] or r["checks"]["limits"] or r["checks"]["finite"]):
            for e in r["checks"]["examples"]:
                if e["kind"] in ("rate", "limits", "non-finite"):
                    out.append(f"  {r['case']} {r['robot']}: violation {e['segment']} t={e['t']}s mode {e['mode']}: "
                               f"{e['what']}")
        if r["spurious_latches_before_attack"]:
            out.append(f"  {r['case']} {r['robot']}: fault latched before the attack (reset, retried): "
                       f"{r['spurious_latches_before_attack']}")
        if r["error"]:
            out.append(f"  {r['case']} {r['robot']}: ERROR {r['error']}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="all", help="go1 | panda | all (or a comma list)")
    ap.add_argument("--cases", default=CASES, help="letters among ABCDEFGHI, e.g. ADG or A,D,G")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--table", type=Path, help="also write the printed table here")
    ap.add_argument("--bundles", type=Path, help="a dir with go1/bundle and panda/bundle (default: train tiny ones)")
    ap.add_argument("--logdir", type=Path, help="keep the node logs here (default: a temp dir)")
    ap.add_argument("--case-timeout", type=float, default=120.0, help="s per case and robot")
    args = ap.parse_args(argv)
    robots = ROBOTS if args.robot == "all" else tuple(r.strip() for r in args.robot.split(","))
    cases = [x for x in args.cases.upper() if x in CASES]
    if not cases or any(r not in ROBOTS for r in robots):
        ap.error("unknown --cases / --robot")
    dom = int(os.environ["ROS_DOMAIN_ID"])

    import roboreal
    from roboreal.robots.spec import load_robot
    import yaml

    load_package()

    t_all = time.monotonic()
    load_start = os.getloadavg()
    log(f"roboreal from {roboreal.__file__}; ROS_DOMAIN_ID={dom}; robots {robots}; cases {''.join(cases)}; "
        f"{'package hostile driver + WireChecker' if PKG else 'old code: own driver, no WireChecker'}")
    tmp = tempfile.TemporaryDirectory(prefix="hostile_")  # the bundles' training runs
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="hostile_client_logs_"))  # kept
    logdir.mkdir(parents=True, exist_ok=True)
    if args.bundles:
        bundles = {r: args.bundles / r / "bundle" for r in ROBOTS}
    else:
        t = time.monotonic()
        bundles = make_bundles(Path(tmp.name) / "runs", robots)
        log(f"bundles trained and exported in {time.monotonic() - t:.1f} s")
    rows, limits = [], {}
    try:
        for robot in robots:
            spec = load_robot(robot)
            # the manifest as written (the node, not this script, decides whether it is acceptable)
            dt = float(yaml.safe_load((bundles[robot] / "manifest.yaml").read_text())["control"]["dt"])
            lim = Limits(spec, dt)
            limits[robot] = lim.to_dict()
            client = HostileRobot(spec, lim)
            try:
                for letter in cases:
                    h = CaseRun(letter, robot, client, bundles[robot], lim, logdir, args.case_timeout, spec)
                    log(f"case {letter} ({CASE_TITLES[letter]}) on {robot}")
                    try:
                        CASE_FUNCS[letter](h)
                    except (NodeDied, CaseTimeout, CaseFailed) as e:
                        h.error = f"{type(e).__name__}: {e}"
                    except Exception as e:  # a bug in a case must not lose the others
                        h.error = f"{type(e).__name__}: {e}"
                        traceback.print_exc()
                    finally:
                        try:
                            h.stop_node()
                        except Exception:
                            traceback.print_exc()
                    row = summarize(h)
                    rows.append(row)
                    k, w = row["checks"], row["wire"]
                    wtxt = "" if w is None else (
                        f"WireChecker {w['audited']}/{w['commands']} audited, violations "
                        f"{ {i: n for i, n in w['violations'].items() if n} or 'none'}, best-effort "
                        f"{w['torque_best_effort']}, rate ratio {w['max_rate_ratio']:.3g}; ")
                    log(f"  {k['checked']} cmds; {wtxt}finite {k['finite']} limits {k['limits']} rate {k['rate']} "
                        f"torque~ {k['torque']}; max step {k['max_step']:.3g}; {row['fault_detected']}"
                        f"{'; ERROR ' + row['error'] if row['error'] else ''} ({row['duration_s']:.1f} s)")
            finally:
                client.close()
    finally:
        total = time.monotonic() - t_all
        load = (load_start, os.getloadavg())
        text = (table(rows, limits) + f"\n\ntotal {total:.0f} s; load average (1/5/15 min) at start "
                f"{'/'.join(f'{x:.1f}' for x in load[0])}, at end {'/'.join(f'{x:.1f}' for x in load[1])} on "
                f"{os.cpu_count()} cores; node logs in {logdir}\n")
        print(text)
        if args.table:
            args.table.write_text(text)
        if args.json:
            args.json.write_text(json.dumps(jsonable({
                "roboreal_from": roboreal.__file__, "wire_checker": WIRE is not None, "ros_domain_id": dom, "robots": list(robots), "cases": cases,
                "limits": limits, "total_s": total, "node_logs": str(logdir), "loadavg_start_end": load,
                "cpu_count": os.cpu_count(),
                "torque_note": "rows' 'wire' (when audits exist): WireChecker over every command with its audit "
                               "(torque with the gains the robot applies and the audit's state; best effort "
                               "allowed on fixed gains). 'checks': this script's own checks; torque~ is an "
                               "approximate STRICT check: (q, dq) = the last state this client published before "
                               "the command arrived (the node may have used an older one), robot.yaml's fixed "
                               "gains (the wire's with position_gains); torque~3 counts commands that violate it "
                               "for each of the last 3 published states",
                "rows": rows}), indent=1))
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
