"""The policy node (`roboreal deploy BUNDLE --robot NAME`): a bundle driving a robot over ROS 2.

    sensors --> ObservationBuilder --> bundle.act --> (teleop override) --> SafetyChain --> commands

Every control period (the manifest's ``control.dt``, on a timer) the node builds the
observation exactly as the manifest describes it (`observation.py`), runs the policy,
and passes the action (the policy's, or the human's while intervening) through the
safety chain. Nothing else is ever published on the command topics.

Startup. The bundle is loaded with ``load_bundle(path, robot=spec)``: a bundle for another
robot (name, joint order, missing sensors, changed robot.yaml) is refused, the error is
logged and the process exits with status 1. Until every spec joint's position and
velocity (and, for quadrupeds, an IMU message) has arrived, the node publishes NO
commands at all (the robot's controller keeps what it has; diagnostics say what is
missing). On the first complete state the chain is reset: startup ramp from the
measured pose to the default pose, then the policy fades in.

subscribes
  * ``joint_states_topic`` sensor_msgs/JointState (sensor-data QoS): joints mapped by NAME;
    partial messages are merged; unknown joints ignored; NaN passes to the chain (latched fault)
  * ``imu_topic`` sensor_msgs/Imu (quadrupeds; sensor-data QoS)
  * ``cmd_vel_topic`` geometry_msgs/Twist (quadrupeds): the velocity command, clipped to
    [cmd_vel_min, cmd_vel_max] (the training ranges); non-finite messages are dropped
  * ``goal_topic`` geometry_msgs/PoseStamped (manipulators): the goal position, in one of
    ``goal_frame_ids`` (the robot base = the sim's world frame; no TF lookups here)
  * ``object_pose_topic`` geometry_msgs/PoseStamped (only if the manifest observes the object)
  * ``intervention_topic`` std_msgs/Bool: true = the human drives, false = the policy
  * ``teleop_action_topic`` std_msgs/Float64MultiArray: the human's normalized action
  * ``~/estop`` std_msgs/Bool: true latches the e-stop (false does nothing)

publishes
  * ``joint_commands_topic``: std_msgs/Float64MultiArray (ros2_control forward command
    controller: positions, or efforts for force-controlled robots, actuated joints in spec
    order), or trajectory_msgs/JointTrajectory (one point, ``trajectory_time_from_start``)
    when ``command_interface`` is joint_trajectory; reliable, depth 10
  * ``gripper_commands_topic`` (robots with a gripper and a policy with a gripper action):
    the opening in m from the safety chain's gripper limit (`SafetyChain.gripper`): finite,
    within the gripper range, only while the chain is in policy mode
  * ``~/policy_action``, ``~/executed_action`` (Float64MultiArray): the policy's action and
    the action fed to the chain (the human's while intervening), every step
  * ``~/mode`` (std_msgs/String, transient local): the chain's mode, on every change
  * ``~/step`` (std_msgs/Float64MultiArray, reliable, depth 100): one message per control step in
    which the policy ran, holding that step's observation, policy action, commanded action,
    applied (post-chain) action, intervention flags, chain mode, step counter, stamp and reset
    count, as labelled segments (`step_record.py`): what `roboreal record` stores, paired exactly
  * ``~/info`` (std_msgs/String JSON, transient local): robot, bundle path and checksums, control
    period, observation layout, step layout and the resolved names of the topics above
  * ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` s)

service ``~/reset`` (std_srvs/Trigger): releases the e-stop, clears latched faults
(NaN, tilt, watchdog), restarts the startup ramp from the measured pose, and counts itself in
``~/step``'s ``reset_count`` (the recorder starts a new episode there).

Watchdog, tilt, NaN and limits are the chain's (`roboreal.sim2real.safety`). While
intervening, the chain's command watchdog watches the teleop action stream instead of
cmd_vel/goal. A missing goal / object pose makes the chain hold (the policy is not run on
an input it never received). ``policy.last_action`` (go1) is, by default, the action fed to
the chain while it is in policy mode, and the chain's output mapped back to action space
while it ramps / holds / damps: the action that describes what the robot did (zeros at the
default pose), as in simulation where every action is executed. On shutdown (SIGINT/SIGTERM)
the node latches the e-stop, publishes the chain's safe command (hold or damping, the spec's
fault mode) once more, and exits.

Parameters (defaults: this file, then ``config/policy_node_<robot>.yaml``, then params
files / -p overrides): see `PARAMETERS`; ``safety.<field>`` (the robot.yaml ``safety:``
keys, e.g. ``safety.velocity_scale``, ``safety.watchdog.command``) may only TIGHTEN the
robot's limits (`SafetyLimits.tighten` refuses loosening: the node exits with status 2).
"""

from __future__ import annotations

import collections
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from roboreal.config import ConfigError
from roboreal.robots.spec import load_robot
from roboreal.sim2real.bundle import BundleError, load_bundle, sha256
from roboreal.sim2real.nodes.observation import ObservationBuilder, applied_action
from roboreal.sim2real.nodes.params import config_file, default_parameters
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.step_record import MODES, StepPacker, info_json, step_fields
from roboreal.sim2real.safety import SafetyChain, SafetyLimits

NODE_NAME = "policy_node"

# name -> (default, description); "" topic defaults mean "the robot spec's ros.* topic".
PARAMETERS: dict[str, tuple[Any, str]] = {
    "runtime": ("onnx", "onnx | torchscript"),
    "joint_states_topic": ("", "sensor_msgs/JointState (default: spec ros.joint_states)"),
    "imu_topic": ("", "sensor_msgs/Imu (default: spec ros.imu)"),
    "cmd_vel_topic": ("", "geometry_msgs/Twist (default: spec ros.cmd_vel)"),
    "goal_topic": ("", "geometry_msgs/PoseStamped goal (default: spec ros.goal)"),
    "object_pose_topic": ("", "geometry_msgs/PoseStamped of the object (default: spec ros.object_pose)"),
    "joint_commands_topic": ("", "command topic (default: spec ros.joint_commands)"),
    "gripper_commands_topic": ("", "gripper command topic (default: spec ros.gripper_commands)"),
    "command_interface": ("", "forward_command | joint_trajectory (default: spec ros.command_interface)"),
    "trajectory_time_from_start": (0.0, "s, time_from_start of the JointTrajectory point (0: the control period)"),
    "intervention_topic": ("/intervention", "std_msgs/Bool: true = the human's action drives the robot"),
    "teleop_action_topic": ("/teleop/action", "std_msgs/Float64MultiArray: the human's normalized action"),
    "teleop_action_timeout": (0.0, "s after which a teleop action is stale (0: the chain's command timeout)"),
    "object_pose_timeout": (0.0, "s after which the object pose is stale and the chain holds (0: command timeout)"),
    "diagnostics_topic": ("/diagnostics", "diagnostic_msgs/DiagnosticArray"),
    "diagnostics_period": (1.0, "s between diagnostics messages"),
    "cmd_vel_min": ([-math.inf] * 3, "lower bounds of (vx, vy, yaw rate) fed to the policy"),
    "cmd_vel_max": ([math.inf] * 3, "upper bounds of (vx, vy, yaw rate) fed to the policy"),
    "goal_frame_ids": (["", "world"], "frame_ids a goal / object pose may be given in (the robot base frame)"),
    "last_action_source": ("executed", "what policy.last_action observes: commanded (the action fed to the chain) | "
                                       "applied (the chain's output mapped back to the action space) | executed "
                                       "(commanded in policy mode, applied while the chain ramps/holds/damps)"),
}
SAFETY_KEYS = ("joint_position_margin", "velocity_scale", "torque_scale", "max_target_rate", "tilt_limit",
               "workspace_min", "workspace_max", "startup_ramp_time", "fade_in_time",
               "watchdog.joint_states", "watchdog.imu", "watchdog.command")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _stamp(msg_stamp) -> float:
    return msg_stamp.sec + msg_stamp.nanosec * 1e-9


def _floats(name: str, value: Any, n: int) -> np.ndarray:
    try:
        a = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {n} numbers, got {value!r}") from None
    if len(a) != n:
        raise ConfigError(name, f"expected {n} numbers, got {len(a)}")
    return a


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        dyn = dict(dynamic_typing=True)
        robot = str(self.declare_parameter("robot", "", ParameterDescriptor(
            description="robot name or robot.yaml path", **dyn)).value or "")
        bundle_path = str(self.declare_parameter("bundle", "", ParameterDescriptor(
            description="policy bundle directory", **dyn)).value or "")
        if not robot:
            raise ConfigError("robot", "not set: pass --robot NAME or --ros-args -p robot:=NAME")
        if not bundle_path:
            raise ConfigError("bundle", "not set: pass the bundle directory or --ros-args -p bundle:=PATH")
        self.spec = spec = load_robot(robot)
        defaults = _flatten(default_parameters(NODE_NAME, robot))
        unknown = sorted(k for k in defaults if k not in PARAMETERS and k not in {"robot", "bundle"}
                         and k not in {f"safety.{s}" for s in SAFETY_KEYS})
        if unknown:
            raise ConfigError(unknown[0], f"unknown policy_node parameter in {config_file(NODE_NAME, robot)}")
        p = {name: self.declare_parameter(name, defaults.get(name, default),
                                          ParameterDescriptor(description=desc, **dyn)).value
             for name, (default, desc) in PARAMETERS.items()}
        # Safety: defaults are robot.yaml's; any value that differs must tighten it.
        base = SafetyLimits.from_spec(spec)
        overrides = {}
        for key in SAFETY_KEYS:
            spec_value = base.get(key)
            if isinstance(spec_value, tuple):
                spec_value = list(spec_value)
            value = self.declare_parameter(f"safety.{key}", defaults.get(f"safety.{key}", spec_value),
                                           ParameterDescriptor(description=f"tighten robot.yaml safety.{key}",
                                                               **dyn)).value
            if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
                value = [float(v) for v in value]
            if value != spec_value:
                overrides[key] = value
        known = {"robot", "bundle", "use_sim_time", "start_type_description_service", *PARAMETERS,
                 *(f"safety.{k}" for k in SAFETY_KEYS)}
        stray = sorted(k for k in getattr(self, "_parameter_overrides", {}) if k not in known
                       and not k.startswith("qos_overrides."))
        if stray:
            self.get_logger().warning(f"unknown parameter(s) ignored: {stray}")

        # ----- the bundle (refused unless it matches this robot) -----
        runtime = str(p["runtime"])
        self.bundle = load_bundle(bundle_path, robot=spec, runtime=runtime)
        m = self.bundle.manifest
        self.dt = float(m["control"]["dt"])
        self.mapping = self.bundle.action_mapping
        self.limits = base.tighten(**overrides) if overrides else base
        self.chain = SafetyChain(spec, self.mapping, self.dt, self.limits)
        self.builder = ObservationBuilder(m, spec)
        self.action_size = self.bundle.action_size if not self.bundle.discrete else self.mapping.size
        self.extra = list(m["action"].get("extra") or [])
        self.has_gripper_action = "gripper" in self.extra and spec.gripper is not None

        # ----- parameters -----
        ros = spec.ros
        topic = lambda key, fallback: str(p[key] or (fallback or ""))  # noqa: E731
        self.interface = topic("command_interface", ros.command_interface)
        if self.interface not in ("forward_command", "joint_trajectory"):
            raise ConfigError("command_interface",
                              f"expected forward_command or joint_trajectory, got {self.interface!r}")
        if self.interface == "joint_trajectory" and not self.chain.position_control:
            raise ConfigError("command_interface", f"joint_trajectory needs a position-controlled robot; "
                              f"{spec.name} is {spec.control_mode}-controlled")
        self.traj_time = float(p["trajectory_time_from_start"]) or self.dt
        wd_cmd = self.limits.watchdog.command
        self.teleop_timeout = float(p["teleop_action_timeout"]) or wd_cmd
        self.object_timeout = float(p["object_pose_timeout"]) or wd_cmd
        self.diag_period = float(p["diagnostics_period"])
        if not self.diag_period > 0:
            raise ConfigError("diagnostics_period", f"must be positive, got {self.diag_period}")
        self.cmd_min = _floats("cmd_vel_min", p["cmd_vel_min"], 3)
        self.cmd_max = _floats("cmd_vel_max", p["cmd_vel_max"], 3)
        self.goal_frames = {str(f) for f in p["goal_frame_ids"]}
        self.last_action_source = str(p["last_action_source"])
        if self.last_action_source not in ("commanded", "applied", "executed"):
            raise ConfigError("last_action_source",
                              f"expected commanded, applied or executed, got {self.last_action_source!r}")
        self.watch_commands = ros.cmd_vel is not None or ros.goal is not None  # the chain's command watchdog

        # ----- state -----
        self.started = False  # first complete state seen, chain reset
        self.pending: str | None = None  # why the policy is not run (the chain holds)
        self.intervening = False
        self.teleop_action: np.ndarray | None = None
        self.teleop_time: float | None = None
        self.gripper_width: float | None = None
        self.mode = "waiting"
        self.last_cmd = None
        self.steps = 0
        self.reset_count = 0  # ~/reset calls: the recorder's episode boundary
        self.human_action = False  # the human's fresh teleop action was fed to the chain this step
        self.window = collections.deque(maxlen=max(10, int(round(5.0 / self.dt))))  # (t, latency, inference)
        self.periods = collections.deque(maxlen=max(10, int(round(5.0 / self.dt))))
        self.last_tick: float | None = None
        self.dropped: collections.Counter = collections.Counter()
        self.prev_report = self.chain.report()
        self.prev_report_time = time.monotonic()

        # ----- ROS interfaces -----
        self.topics = {
            "joint_states": topic("joint_states_topic", ros.joint_states),
            "imu": topic("imu_topic", ros.imu), "cmd_vel": topic("cmd_vel_topic", ros.cmd_vel),
            "goal": topic("goal_topic", ros.goal), "object_pose": topic("object_pose_topic", ros.object_pose),
            "joint_commands": topic("joint_commands_topic", ros.joint_commands),
            "gripper_commands": topic("gripper_commands_topic", ros.gripper_commands),
        }
        reliable = QoSProfile(depth=10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(JointState, self.topics["joint_states"], self._on_joint_state, qos_profile_sensor_data)
        if self.builder.needs_imu:
            if not self.topics["imu"]:
                raise ConfigError("imu_topic", f"the policy needs an IMU and robot {spec.name} names no ros.imu topic")
            self.create_subscription(Imu, self.topics["imu"], self._on_imu, qos_profile_sensor_data)
        self.needs_cmd_vel = any(t.source == "cmd_vel" for t in self.builder.terms)
        if self.needs_cmd_vel:
            self.create_subscription(Twist, self.topics["cmd_vel"], self._on_cmd_vel, reliable)
        if self.builder.needs_goal:
            self.create_subscription(PoseStamped, self.topics["goal"], self._on_goal, reliable)
        if self.builder.needs_object:
            if not self.topics["object_pose"]:
                raise ConfigError("object_pose_topic", f"the policy observes an object; robot {spec.name} names "
                                  "no ros.object_pose topic")
            self.create_subscription(PoseStamped, self.topics["object_pose"], self._on_object, qos_profile_sensor_data)
        self.create_subscription(Bool, str(p["intervention_topic"]), self._on_intervention, reliable)
        self.create_subscription(Float64MultiArray, str(p["teleop_action_topic"]), self._on_teleop_action, reliable)
        self.create_subscription(Bool, "~/estop", self._on_estop, reliable)
        self.create_service(Trigger, "~/reset", self._on_reset)

        if self.interface == "forward_command":
            self.cmd_pub = self.create_publisher(Float64MultiArray, self.topics["joint_commands"], reliable)
        else:
            self.cmd_pub = self.create_publisher(JointTrajectory, self.topics["joint_commands"], reliable)
        self.gripper_pub = None
        if self.has_gripper_action:
            if not self.topics["gripper_commands"]:
                raise ConfigError("gripper_commands_topic", "the policy commands a gripper; no topic is set")
            self.gripper_pub = self.create_publisher(Float64MultiArray, self.topics["gripper_commands"], reliable)
        self.policy_action_pub = self.create_publisher(Float64MultiArray, "~/policy_action", reliable)
        self.executed_action_pub = self.create_publisher(Float64MultiArray, "~/executed_action", reliable)
        self.mode_pub = self.create_publisher(String, "~/mode", latched)
        # ~/step: deep history, so a recorder that is briefly slow (writing an episode) loses nothing
        self.step_pub = self.create_publisher(Float64MultiArray, "~/step", QoSProfile(depth=100))
        self.step_packer = StepPacker(self.builder.size, self.action_size)
        self.info_pub = self.create_publisher(String, "~/info", latched)
        self.diag_pub = self.create_publisher(DiagnosticArray, str(p["diagnostics_topic"]), reliable)
        self._publish_mode("waiting")
        self.info_pub.publish(String(data=info_json(self.session_info(bundle_path, runtime, p))))
        self.timer = self.create_timer(self.dt, self._step)
        self.diag_timer = self.create_timer(self.diag_period, self._publish_diagnostics)
        tightened = f"; tightened {overrides}" if overrides else ""
        self.get_logger().info(
            f"{spec.name}: bundle {bundle_path} ({m['training']['task']}, {m['training']['algo']}, {runtime}), "
            f"{1 / self.dt:.0f} Hz, obs {self.builder.size} from {[t.name for t in self.builder.terms]}, "
            f"commands ({self.interface}) on {self.topics['joint_commands']}"
            f"{', gripper on ' + self.topics['gripper_commands'] if self.gripper_pub else ''}{tightened}; "
            f"waiting for {', '.join(self.builder.missing())}")

    def session_info(self, bundle_path: str, runtime: str, p: dict) -> dict:
        """What ~/info says: the provenance a recording of this node needs (see step_record.py)."""
        m = self.bundle.manifest
        path = Path(bundle_path)
        resolve = lambda name: self.resolve_topic_name(name)  # noqa: E731  (namespaces, ~ expanded)
        topics = {k: resolve(v) for k, v in self.topics.items() if v}
        if not self.builder.needs_imu:
            topics.pop("imu", None)
        if not self.needs_cmd_vel:
            topics.pop("cmd_vel", None)
        if not self.builder.needs_goal:
            topics.pop("goal", None)
        if not self.builder.needs_object:
            topics.pop("object_pose", None)
        if self.gripper_pub is None:
            topics.pop("gripper_commands", None)
        topics.update(intervention=resolve(str(p["intervention_topic"])),
                      teleop_action=resolve(str(p["teleop_action_topic"])),
                      diagnostics=resolve(str(p["diagnostics_topic"])),
                      **{k: resolve(f"~/{k}") for k in ("estop", "policy_action", "executed_action", "mode",
                                                        "step", "info")})
        return {
            "node": self.get_fully_qualified_name(), "robot": self.spec.name,
            "robot_spec_checksum": self.spec.checksum, "robot_kind": self.spec.kind,
            "bundle": {"path": str(path.resolve()), "manifest_sha256": sha256(path / "manifest.yaml"),
                       "files": m.get("files") or {}, "runtime": runtime, "created": m.get("created")},
            "training": m.get("training") or {}, "control_dt": self.dt, "joints": list(m["joints"]),
            "obs_size": int(self.builder.size), "observation_layout": m["observation"]["terms"],
            "obs_group": m["observation"].get("group", "policy"), "action_size": int(self.action_size),
            "action": {k: m["action"].get(k) for k in ("type", "space", "extra") if k in m["action"]},
            "step_fields": step_fields(self.builder.size, self.action_size), "modes": list(MODES),
            "command_interface": self.interface, "topics": topics,
            "safety_limits": self.limits.to_dict(),
        }

    # ------------------------------------------------------------------ inputs
    def _drop(self, what: str, why: str) -> None:
        self.dropped[what] += 1
        self.get_logger().warning(f"dropping {what}: {why}", throttle_duration_sec=1.0)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            hits = self.builder.set_joint_state(msg.name, msg.position, msg.velocity, time.monotonic(),
                                                _stamp(msg.header.stamp) or None)
        except ValueError as e:
            return self._drop("JointState", str(e))
        if hits == 0:
            self._drop("JointState", f"none of its joints {list(msg.name)[:4]}... is a joint of {self.spec.name}")

    def _on_imu(self, msg: Imu) -> None:
        o, w = msg.orientation, msg.angular_velocity
        if msg.orientation_covariance[0] == -1.0:  # REP 145: orientation not provided
            quat = (math.nan,) * 4
        else:
            quat = (o.x, o.y, o.z, o.w)
        self.builder.set_imu(quat, (w.x, w.y, w.z), time.monotonic())

    def _on_cmd_vel(self, msg: Twist) -> None:
        v = np.array([msg.linear.x, msg.linear.y, msg.angular.z])
        if not np.isfinite(v).all():
            return self._drop("cmd_vel", f"non-finite {v.tolist()}")
        v = np.clip(v, self.cmd_min, self.cmd_max)
        self.builder.set_cmd_vel(*v, arrival=time.monotonic())

    def _pose(self, what: str, msg: PoseStamped) -> np.ndarray | None:
        p = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if msg.header.frame_id not in self.goal_frames:
            self._drop(what, f"frame_id {msg.header.frame_id!r} is not one of {sorted(self.goal_frames)} "
                             "(the robot base frame; transform it first)")
            return None
        if not np.isfinite(p).all():
            self._drop(what, f"non-finite position {p.tolist()}")
            return None
        return p

    def _on_goal(self, msg: PoseStamped) -> None:
        p = self._pose("goal", msg)
        if p is not None:
            self.builder.set_goal(p, time.monotonic())

    def _on_object(self, msg: PoseStamped) -> None:
        p = self._pose("object pose", msg)
        if p is not None:
            self.builder.set_object_pose(p, time.monotonic(), _stamp(msg.header.stamp) or None)

    def _on_intervention(self, msg: Bool) -> None:
        if bool(msg.data) != self.intervening:
            self.intervening = bool(msg.data)
            self.get_logger().info("intervention: the human's action drives the robot" if self.intervening
                                   else "intervention ended: the policy drives the robot")

    def _on_teleop_action(self, msg: Float64MultiArray) -> None:
        a = np.asarray(msg.data, dtype=np.float64)
        if len(a) != self.action_size:
            return self._drop("teleop action", f"{len(a)} values, the policy's action has {self.action_size}")
        if not np.isfinite(a).all():
            return self._drop("teleop action", "non-finite values")
        self.teleop_action, self.teleop_time = np.clip(a, -1.0, 1.0), time.monotonic()

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            if not self.chain.faults.get("estop"):
                self.get_logger().error("E-STOP (latched until ~/reset)")
            self.chain.estop("operator e-stop on ~/estop")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        now = time.monotonic()
        before = self.chain.faults
        state = self.builder.robot_state() if self.builder.ready else None
        self.chain.reset_estop(state, now if state is not None else None)
        self.builder.set_last_action(None)
        self.reset_count += 1
        response.success = True
        response.message = (f"cleared {sorted(before) or 'nothing'}; startup ramp restarted"
                            + ("" if state is not None else f" (waiting for {', '.join(self.builder.missing())})"))
        self.get_logger().info(f"reset: {response.message}")
        return response

    # ------------------------------------------------------------------ control loop
    def _policy_inputs_pending(self, now: float) -> str | None:
        b = self.builder
        if b.needs_goal and b.goal_time is None:
            return "no goal yet"
        if b.needs_object and (b.object_time is None or now - b.object_time > self.object_timeout):
            return "no object pose" if b.object_time is None else "stale object pose"
        return None

    def _step(self) -> None:
        now = time.monotonic()
        if self.last_tick is not None:
            self.periods.append(now - self.last_tick)
        self.last_tick = now
        b = self.builder
        if not self.started:
            missing = b.missing()
            if missing:
                self.get_logger().info(f"waiting for {', '.join(missing)}; publishing nothing",
                                       throttle_duration_sec=2.0)
                return
            self.chain.reset(b.robot_state(), now)
            self.started = True
            self.get_logger().info("robot state complete: startup ramp to the default pose")

        pending = self._policy_inputs_pending(now)
        self.pending = pending
        t0 = time.perf_counter()
        if pending is None:
            obs = b.build()
            try:
                policy_action = np.asarray(self.bundle.normalized_action(obs), dtype=np.float64).ravel()
            except Exception as e:  # a broken model must not kill the loop: NaN latches the chain's fault mode
                self.get_logger().error(f"policy failed: {e}", throttle_duration_sec=1.0)
                policy_action = np.full(self.action_size, np.nan)
        else:
            policy_action = np.zeros(self.action_size)  # not run; the chain holds (command_stamp None)
        inference = time.perf_counter() - t0

        state = b.robot_state()
        if pending is not None:
            state.command_stamp = None  # the chain holds until the policy's inputs are there
        action = policy_action
        self.human_action = False
        if self.intervening:
            if self.teleop_time is not None and now - self.teleop_time <= self.teleop_timeout:
                action, state.command_stamp = self.teleop_action, self.teleop_time
                self.human_action = True
            else:  # stale teleop: the chain holds where it watches commands; else zero action (= hold)
                action, state.command_stamp = np.zeros(self.action_size), None
        arm = action[:self.mapping.size]
        prev = self.last_cmd
        cmd = self.chain.step(arm, state, now)
        self._publish_command(cmd)
        if self.has_gripper_action and cmd.mode == "policy" and len(action) > self.mapping.size:
            self._publish_gripper(action[self.mapping.size], now)
        # policy.last_action, as the sim's `actions`: what drove the robot this step
        applied = self._applied_action(cmd, prev, action)
        last = action
        if self.last_action_source == "applied" or (self.last_action_source == "executed" and cmd.mode != "policy"):
            last = applied
        if any(t.source == "policy.last_action" for t in b.terms):
            b.set_last_action(last)
        self.last_cmd = cmd
        self.steps += 1
        if pending is None:  # not published while the policy is not run
            self.policy_action_pub.publish(Float64MultiArray(data=[float(v) for v in policy_action]))
            self.step_pub.publish(self.step_packer.pack({
                "step": self.steps, "stamp": self.get_clock().now().nanoseconds * 1e-9,
                "reset_count": self.reset_count, "mode": MODES.index(cmd.mode) if cmd.mode in MODES else -1,
                "intervention": self.intervening, "human_action": self.human_action, "observation": obs,
                "policy_action": policy_action, "commanded_action": action, "applied_action": applied}))
        self.executed_action_pub.publish(Float64MultiArray(data=[float(v) for v in action]))
        if cmd.mode != self.mode:
            self._publish_mode(cmd.mode)
        latency = None
        if b.joint_header_stamp:
            latency = self.get_clock().now().nanoseconds * 1e-9 - b.joint_header_stamp
        self.window.append((now, latency, inference))

    def _applied_action(self, cmd, prev, action: np.ndarray) -> np.ndarray:
        idx = [self.chain.joint_names.index(j) for j in self.mapping.joints]
        return applied_action(self.mapping, cmd.values[idx], None if prev is None else prev.values[idx], action)

    def _publish_command(self, cmd) -> None:
        values = [float(v) for v in cmd.values]
        if self.interface == "forward_command":
            self.cmd_pub.publish(Float64MultiArray(data=values))
        else:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.joint_names = list(cmd.joint_names)
            pt = JointTrajectoryPoint()
            pt.positions = values
            sec = int(self.traj_time)
            pt.time_from_start.sec, pt.time_from_start.nanosec = sec, int(round((self.traj_time - sec) * 1e9))
            msg.points = [pt]
            self.cmd_pub.publish(msg)

    def _publish_gripper(self, a: float, now: float) -> None:
        width = self.chain.gripper(a, now)  # None: not under the policy, or not a number
        if width is None:
            return  # the gripper keeps its last command
        self.gripper_width = width
        self.gripper_pub.publish(Float64MultiArray(data=[width]))

    def _publish_mode(self, mode: str) -> None:
        self.mode = mode
        self.mode_pub.publish(String(data=mode))
        if mode in ("damping", "estop", "hold"):
            faults = self.chain.faults
            self.get_logger().warning(f"mode {mode}" + (f": {faults}" if faults else ""))
        else:
            self.get_logger().info(f"mode {mode}")

    def publish_safe_command(self) -> bool:
        """Latch the e-stop and publish the chain's safe command once (on shutdown)."""
        if not self.started:
            return False
        self.chain.estop("policy node shutting down")
        cmd = self.chain.step(np.zeros(self.mapping.size), self.builder.robot_state(), time.monotonic())
        self._publish_command(cmd)
        self._publish_mode(cmd.mode)
        return True

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> DiagnosticStatus:
        now = time.monotonic()
        st = DiagnosticStatus()
        st.name = f"{NODE_NAME}: {self.spec.name}"
        st.hardware_id = self.spec.name
        faults = self.chain.faults
        mode = self.mode
        if mode in ("damping", "estop") or faults:
            st.level = DiagnosticStatus.ERROR
        elif mode in ("waiting", "hold", "startup_ramp"):
            st.level = DiagnosticStatus.WARN
        else:
            st.level = DiagnosticStatus.OK
        recent = [w for w in self.window if now - w[0] <= max(self.diag_period, 1.0)]
        span = max(self.diag_period, 1.0)
        lat = [w[1] * 1e3 for w in recent if w[1] is not None]
        inf = [w[2] * 1e3 for w in recent]
        periods = list(self.periods)[-len(recent):] if recent else []
        report = self.chain.report()
        dt_report = max(now - self.prev_report_time, 1e-9)
        values = {
            "mode": mode,
            "faults": "; ".join(f"{k}: {v}" for k, v in faults.items()) or "none",
            "intervening": str(self.intervening).lower(),
            "loop_rate_hz": f"{len(recent) / span:.1f}",
            "target_rate_hz": f"{1 / self.dt:.1f}",
            "loop_period_max_ms": f"{max(periods) * 1e3:.2f}" if periods else "nan",
            "latency_mean_ms": f"{np.mean(lat):.2f}" if lat else "nan",
            "latency_max_ms": f"{np.max(lat):.2f}" if lat else "nan",
            "inference_mean_ms": f"{np.mean(inf):.3f}" if inf else "nan",
            "steps": str(self.steps),
            "waiting_for": ", ".join(self.builder.missing()) or self.pending or "nothing",
        }
        for name, r in report.items():
            if r["count"] == 0:
                continue
            delta = r["count"] - self.prev_report.get(name, {}).get("count", 0)
            values[f"intervention.{name}.count"] = str(r["count"])
            values[f"intervention.{name}.per_s"] = f"{delta / dt_report:.1f}"
            values[f"intervention.{name}.max_magnitude"] = f"{r['max_magnitude']:.4g}"
        for what, n in self.dropped.items():
            values[f"dropped.{what}"] = str(n)
        self.prev_report, self.prev_report_time = report, now
        st.message = mode + (f" ({', '.join(faults)})" if faults else "")
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return st

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics()]
        self.diag_pub.publish(msg)


def run(ros_args: list[str]) -> int:
    """Run the node with `ros_args` (as after `--ros-args`); returns an exit code.

    1: the bundle was refused (wrong robot, damaged, unknown runtime); 2: a bad parameter."""
    from rclpy.executors import SingleThreadedExecutor

    # The context outlives SIGINT/SIGTERM so that the safe command is still published on the way out.
    with ros_until_signal("roboreal-deploy", ros_args) as stop:
        try:
            node = PolicyNode()
        except BundleError as e:
            print(f"[policy_node] refusing to start: bundle rejected: {e}", file=sys.stderr, flush=True)
            return 1
        except ConfigError as e:
            print(f"[policy_node] refusing to start: {e}", file=sys.stderr, flush=True)
            return 2
        try:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.05)
            if node.publish_safe_command():
                print("[policy_node] shutting down: published the safe command "
                      f"({node.mode}, {node.spec.safety.fault_mode})", flush=True)
                end = time.monotonic() + 0.2  # let DDS deliver it
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.02)
        finally:
            node.destroy_node()
    return 0
