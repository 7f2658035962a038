"""The policy node (`roboreal deploy BUNDLE --robot NAME`): a bundle driving a robot over ROS 2.

    sensors --> ObservationBuilder --> bundle.act --> (teleop override) --> SafetyChain --> commands

Every control step (the manifest's ``control.dt``; see ``control_trigger``) the node builds
the observation exactly as the manifest describes it (`observation.py`), runs the policy,
and passes the action (the policy's, or the human's while intervening) through the safety
chain. Nothing else is ever published on the command topics, in any mode: what arrives
there is finite, inside the position limits minus the margin, within max_target_rate * dt
of the previous command, and (wherever those allow) within the torque bound under the gains
the robot applies (`roboreal.sim2real.safety.SafetyChain`; tested over DDS by
tests/test_safety_wire.py).

Startup. The bundle is loaded with ``load_bundle(path, robot=spec)``: a bundle for another
robot (name, joint order, missing sensors, changed robot.yaml) is refused, the error is
logged and the process exits with status 1. Until every spec joint's position and
velocity (and, for quadrupeds, an IMU message) has arrived, and the readings are finite
and plausible, the node publishes NO commands at all (the robot's controller keeps what it
has; diagnostics say what is missing or wrong). Then the chain is reset: startup ramp from
the measured pose to the default pose, then the policy fades in.

Control step (``control_trigger``): ``timer`` runs it on a fixed grid of period dt, after
handling every message already waiting (a stalled node never steps on readings older than
what has arrived); ``joint_states`` runs it when a JointState arrives (lowest latency;
decimated to the control rate, with a fallback tick when the stream stops). ``executor``:
``single`` (rclpy's SingleThreadedExecutor) or ``events`` (rclpy.experimental.EventsExecutor).
A step that starts more than half a period late is a node *overrun*: counted and reported
in the diagnostics, never mistaken for a sensor timeout. See `timing.py`.

Readings are aged by their header stamps: a JointState / Imu / object pose counts as
measured at its ``header.stamp`` (the node's ROS clock must be the sensor's: see
`timing.py`), so a delayed stream, replayed old data or a frozen stamp trip the watchdog
like silence; a zero stamp, a stamp more than ``safety.watchdog.future_stamp`` in the
future, or one older than the last accepted is refused (counted in the diagnostics).

subscribes
  * ``joint_states_topic`` sensor_msgs/JointState (sensor-data QoS): joints mapped by NAME;
    partial messages are merged; unknown joints ignored; NaN passes to the chain (latched fault)
  * ``imu_topic`` sensor_msgs/Imu (quadrupeds; sensor-data QoS)
  * ``cmd_vel_topic`` geometry_msgs/Twist (quadrupeds): the velocity command, clipped to
    the ranges the bundle was trained on (manifest ``inputs.command.ranges``), narrowed by
    [cmd_vel_min, cmd_vel_max] if set; non-finite messages are dropped
  * ``goal_topic`` geometry_msgs/PoseStamped (manipulators): the goal position, in one of
    ``goal_frame_ids`` (the robot base = the sim's world frame; no TF lookups here)
  * ``object_pose_topic`` geometry_msgs/PoseStamped (only if the manifest observes the object)
  * ``intervention_topic`` std_msgs/Bool: true = the human drives, false = the policy
  * ``teleop_action_topic`` std_msgs/Float64MultiArray: the human's normalized action
  * ``~/estop`` std_msgs/Bool: true latches the e-stop (false does nothing)

publishes
  * ``joint_commands_topic``, by ``command_interface`` (robot.yaml ``ros.command_interface``):
    forward_command: std_msgs/Float64MultiArray (ros2_control forward command controller:
    positions, or efforts for force-controlled robots, actuated joints in spec order; the
    robot applies its fixed robot.yaml gains); position_gains: std_msgs/Float64MultiArray
    [positions, kp, kd] (3 x N, layout dims "interface" x "joint"), for drivers that take
    per-joint gains (the chain's damping then has kp = 0); joint_trajectory:
    trajectory_msgs/JointTrajectory (one point, ``trajectory_time_from_start``); reliable, depth 10
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
  * ``~/audit`` (std_msgs/Float64MultiArray, reliable, depth 100): one message after every
    command: what was sent, the gains the robot applies, the measured state the chain used,
    the mode and which filters intervened (`step_record.audit_fields`)
  * ``~/info`` (std_msgs/String JSON, transient local): robot, bundle path and checksums, control
    period, observation layout, step layout and the resolved names of the topics above
  * ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every ``diagnostics_period`` s)

services (std_srvs/Trigger)
  * ``~/reset``: clears latched faults (NaN, implausible readings, tilt, watchdog; NOT the
    e-stop), restarts the startup ramp from the last command (never a jump), and counts itself
    in ``~/step``'s ``reset_count`` (the recorder starts a new episode there). Refused while any
    joint moves faster than ``safety.reset_max_joint_speed`` or the joint readings are unusable.
  * ``~/release_estop``: releases the e-stop (only this does), same refusals; the ramp restarts
    from the last command. Anyone on the ROS graph can call these: see the README's "Access
    control" for SROS2.

Watchdog, tilt, NaN, plausibility and limits are the chain's (`roboreal.sim2real.safety`).
While intervening, the chain's command watchdog watches the teleop action stream instead of
cmd_vel/goal. A missing goal / object pose makes the chain hold (the policy is not run on
an input it never received). ``policy.last_action`` (go1) is, by default, the action fed to
the chain while it is in policy mode, and the chain's output mapped back to action space
while it ramps / holds / damps: the action that describes what the robot did (zeros at the
default pose), as in simulation where every action is executed. On shutdown (SIGINT/SIGTERM)
the node latches the e-stop, publishes the chain's safe command (hold or damping, the spec's
fault mode, rate-limited like every command) once more, and exits.

Parameters (defaults: this file, then the robot kind's ``config/policy_node_<kind>.yaml``
(quadruped, manipulator, cartpole; `roboreal.sim2real.nodes.params`), then params files / -p
overrides): see `PARAMETERS`. ``robot`` is a robot name or a path to a robot.yaml or its
folder (any robot: no per-robot YAML is needed); ``bundle`` the bundle directory;
``safety.<field>`` (the robot.yaml ``safety:`` keys, e.g. ``safety.velocity_scale``,
``safety.watchdog.command``) may only TIGHTEN the robot's limits (`SafetyLimits.tighten`
refuses loosening: the node exits with status 2).
"""

from __future__ import annotations

import array
import collections
import math
import os
import sys
import threading
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
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension, MultiArrayLayout, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from roboreal.config import ConfigError
from roboreal.robots.spec import load_robot
from roboreal.policy_bundle import BundleError, load_bundle, sha256
from roboreal.sim2real.nodes.controller import PolicyController
from roboreal.sim2real.nodes.params import default_parameters
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.step_record import MODES, SegmentPacker, StepPacker, audit_fields, info_json, step_fields
from roboreal.sim2real.nodes.timing import TRIGGERS, ControlSchedule, StampTracker
from roboreal.sim2real.safety import SafetyLimits

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
    "command_interface": ("", "forward_command | position_gains | joint_trajectory (default: spec "
                              "ros.command_interface)"),
    "control_trigger": ("timer", "timer (a fixed period) | joint_states (step when a JointState arrives)"),
    "executor": ("single", "single (SingleThreadedExecutor) | events (rclpy.experimental.EventsExecutor)"),
    "require_stamps": (True, "refuse sensor messages with a zero header.stamp (their age is unknown)"),
    "realtime_priority": (0, "SCHED_FIFO priority (1-99) of the control loop's thread, as ros2_control's "
                             "thread_priority; 0: normal scheduling. Needs CAP_SYS_NICE / an rtprio limit"),
    "trajectory_time_from_start": (0.0, "s, time_from_start of the JointTrajectory point (0: the control period)"),
    "intervention_topic": ("/intervention", "std_msgs/Bool: true = the human's action drives the robot"),
    "teleop_action_topic": ("/teleop/action", "std_msgs/Float64MultiArray: the human's normalized action"),
    "teleop_action_timeout": (0.0, "s after which a teleop action is stale (0: the chain's command timeout)"),
    "object_pose_timeout": (0.0, "s after which the object pose is stale and the chain holds (0: command timeout)"),
    "diagnostics_topic": ("/diagnostics", "diagnostic_msgs/DiagnosticArray"),
    "diagnostics_period": (1.0, "s between diagnostics messages"),
    "cmd_vel_min": ([-math.inf] * 3, "narrow the manifest's lower bounds of (vx, vy, yaw rate) fed to the policy"),
    "cmd_vel_max": ([math.inf] * 3, "narrow the manifest's upper bounds of (vx, vy, yaw rate) fed to the policy"),
    "goal_frame_ids": ([""], "frame_ids a goal / object pose may be given in (the robot base frame); "
                                "[\"\"] (default): the bundle manifest's inputs.goal.frame_ids"),
    "last_action_source": ("executed", "what policy.last_action observes: commanded (the action fed to the chain) | "
                                       "applied (the chain's output mapped back to the action space) | executed "
                                       "(commanded in policy mode, applied while the chain ramps/holds/damps)"),
}
SAFETY_KEYS = ("joint_position_margin", "velocity_scale", "torque_scale", "max_target_rate", "tilt_limit",
               "workspace_min", "workspace_max", "startup_ramp_time", "fade_in_time", "reset_max_joint_speed",
               "watchdog.joint_states", "watchdog.imu", "watchdog.command", "watchdog.future_stamp",
               "plausibility.position_tolerance", "plausibility.velocity_factor", "plausibility.angular_velocity",
               "plausibility.linear_acceleration", "plausibility.quaternion_norm_tolerance")


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
            description="a robot name, or a path to a robot.yaml or its folder", **dyn)).value or "")
        bundle_path = str(self.declare_parameter("bundle", "", ParameterDescriptor(
            description="policy bundle directory", **dyn)).value or "")
        if not robot:
            raise ConfigError("robot", "not set: pass --robot NAME|PATH or --ros-args -p robot:=NAME|PATH")
        if not bundle_path:
            raise ConfigError("bundle", "not set: pass the bundle directory or --ros-args -p bundle:=PATH")
        self.spec = spec = load_robot(robot)
        defaults = default_parameters(NODE_NAME, spec, known={"robot", "bundle", *PARAMETERS,
                                                              *(f"safety.{s}" for s in SAFETY_KEYS)})
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
        self.limits = base.tighten(**overrides) if overrides else base
        ros = spec.ros
        self.interface = str(p["command_interface"] or ros.command_interface)
        if self.interface not in ("forward_command", "position_gains", "joint_trajectory"):
            raise ConfigError("command_interface",
                              f"expected forward_command, position_gains or joint_trajectory, got {self.interface!r}")
        if self.interface != "forward_command" and spec.control_mode != "position":
            raise ConfigError("command_interface", f"{self.interface} needs a position-controlled robot; "
                              f"{spec.name} is {spec.control_mode}-controlled")

        # ----- parameters -----
        topic = lambda key, fallback: str(p[key] or (fallback or ""))  # noqa: E731
        trigger = str(p["control_trigger"])
        if trigger not in TRIGGERS:
            raise ConfigError("control_trigger", f"expected one of {list(TRIGGERS)}, got {trigger!r}")
        self.executor_kind = str(p["executor"])
        if self.executor_kind not in ("single", "events"):
            raise ConfigError("executor", f"expected single or events, got {self.executor_kind!r}")
        self.schedule = ControlSchedule(self.dt, trigger)
        self.realtime_priority = int(p["realtime_priority"])
        if not 0 <= self.realtime_priority <= 99:
            raise ConfigError("realtime_priority", f"expected 0 (off) or 1-99, got {self.realtime_priority}")
        require = p["require_stamps"]
        if not isinstance(require, bool):
            raise ConfigError("require_stamps", f"expected true or false, got {require!r}")
        future = self.limits.watchdog.future_stamp
        self.stamps = {what: StampTracker(what, future, require) for what in ("JointState", "Imu", "object pose")}
        self.traj_time = float(p["trajectory_time_from_start"]) or self.dt
        wd_cmd = self.limits.watchdog.command
        self.teleop_timeout = float(p["teleop_action_timeout"]) or wd_cmd
        self.object_timeout = float(p["object_pose_timeout"]) or wd_cmd
        self.diag_period = float(p["diagnostics_period"])
        if not self.diag_period > 0:
            raise ConfigError("diagnostics_period", f"must be positive, got {self.diag_period}")
        frames = [str(f) for f in p["goal_frame_ids"]]
        if frames == [""]:  # the frames the policy's goals were given in during training
            frames = list(((m.get("inputs") or {}).get("goal") or {}).get("frame_ids") or ["", "world"])
        self.goal_frames = set(frames)
        # The control step itself (observation -> policy -> chain) is the ROS-free controller
        # sim2sim runs too. The gains travel with the command only on position_gains;
        # otherwise the robot applies robot.yaml's, and the chain must not count on any other.
        self.controller = PolicyController(
            self.bundle, spec, self.limits, gains="commanded" if self.interface == "position_gains" else "fixed",
            last_action_source=str(p["last_action_source"]), object_timeout=self.object_timeout,
            cmd_min=_floats("cmd_vel_min", p["cmd_vel_min"], 3), cmd_max=_floats("cmd_vel_max", p["cmd_vel_max"], 3))
        self.chain, self.builder = self.controller.chain, self.controller.builder
        self.action_size = self.controller.action_size
        self.has_gripper_action = self.controller.has_gripper_action
        self.watch_commands = ros.cmd_vel is not None or ros.goal is not None  # the chain's command watchdog

        # ----- state -----
        self.step_requested = False  # event-driven control: a JointState asked for a step
        self.pending: str | None = None  # why the policy is not run (the chain holds)
        self.intervening = False
        self.teleop_action: np.ndarray | None = None
        self.teleop_time: float | None = None
        self.gripper_width: float | None = None
        self.mode = "waiting"
        self.steps = 0
        self.reset_count = 0  # ~/reset calls: the recorder's episode boundary
        self.human_action = False  # the human's fresh teleop action was fed to the chain this step
        self.window = collections.deque(maxlen=max(10, int(round(5.0 / self.dt))))  # (t, latency, inference)
        self.periods = collections.deque(maxlen=max(10, int(round(5.0 / self.dt))))
        self.last_tick: float | None = None
        self.dropped: collections.Counter = collections.Counter()
        self.drop_reasons: dict[str, str] = {}
        self.callbacks = 0  # subscription/service callbacks run: how `spin` knows the queue is empty
        self.commands_sent = 0  # the audit's seq
        self.last_latency: float | None = None  # s from the joints' stamp to the last command
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
        self._subscribe(JointState, self.topics["joint_states"], self._on_joint_state, qos_profile_sensor_data)
        if self.builder.needs_imu:
            if not self.topics["imu"]:
                raise ConfigError("imu_topic", f"the policy needs an IMU and robot {spec.name} names no ros.imu topic")
            self._subscribe(Imu, self.topics["imu"], self._on_imu, qos_profile_sensor_data)
        self.needs_cmd_vel = any(t.source == "cmd_vel" for t in self.builder.terms)
        if self.needs_cmd_vel:
            self._subscribe(Twist, self.topics["cmd_vel"], self._on_cmd_vel, reliable)
        if self.builder.needs_goal:
            self._subscribe(PoseStamped, self.topics["goal"], self._on_goal, reliable)
        if self.builder.needs_object:
            if not self.topics["object_pose"]:
                raise ConfigError("object_pose_topic", f"the policy observes an object; robot {spec.name} names "
                                  "no ros.object_pose topic")
            self._subscribe(PoseStamped, self.topics["object_pose"], self._on_object, qos_profile_sensor_data)
        self._subscribe(Bool, str(p["intervention_topic"]), self._on_intervention, reliable)
        self._subscribe(Float64MultiArray, str(p["teleop_action_topic"]), self._on_teleop_action, reliable)
        self._subscribe(Bool, "~/estop", self._on_estop, reliable)
        self.create_service(Trigger, "~/reset", self._counted(self._on_reset))
        self.create_service(Trigger, "~/release_estop", self._counted(self._on_release_estop))

        if self.interface == "joint_trajectory":
            self.cmd_pub = self.create_publisher(JointTrajectory, self.topics["joint_commands"], reliable)
        else:
            self.cmd_pub = self.create_publisher(Float64MultiArray, self.topics["joint_commands"], reliable)
        self.gains_layout = MultiArrayLayout(dim=[
            MultiArrayDimension(label="interface", size=3, stride=3 * self.chain.n),
            MultiArrayDimension(label="joint", size=self.chain.n, stride=self.chain.n)])
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
        self.audit_pub = self.create_publisher(Float64MultiArray, "~/audit", QoSProfile(depth=100))
        self.audit_packer = SegmentPacker(audit_fields(self.chain.n))
        self.audit_filters = [f.name for f in self.chain.filters] + ["final_guard"]
        self.info_pub = self.create_publisher(String, "~/info", latched)
        self.diag_pub = self.create_publisher(DiagnosticArray, str(p["diagnostics_topic"]), reliable)
        self._publish_mode("waiting")
        self.info_pub.publish(String(data=info_json(self.session_info(bundle_path, runtime, p))))
        self.diag_timer = self.create_timer(self.diag_period, self._counted(self._publish_diagnostics))
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
                                                        "step", "info", "audit")})
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
            "audit_fields": audit_fields(self.chain.n), "audit_interventions": self.audit_filters,
            "gains": self.chain.gains, "control_trigger": self.schedule.trigger, "executor": self.executor_kind,
            "safety_limits": self.limits.to_dict(),
        }

    # ------------------------------------------------------------------ inputs
    def _counted(self, callback):
        """`callback`, counted in `self.callbacks` (how `spin` sees that nothing is waiting)."""
        def run(*args):
            self.callbacks += 1
            return callback(*args)
        return run

    def _subscribe(self, msg_type, topic: str, callback, qos):
        return self.create_subscription(msg_type, topic, self._counted(callback), qos)

    def _measured_at(self, what: str, header) -> float | None:
        """When a stamped message was measured, on the node's monotonic clock (None: refused)."""
        arrival = time.monotonic()
        when, why = self.stamps[what].measured_at(_stamp(header.stamp), self.get_clock().now().nanoseconds * 1e-9,
                                                  arrival)
        if why is not None:
            self._drop(what, why)
        return when

    def _drop(self, what: str, why: str) -> None:
        self.dropped[what] += 1
        self.drop_reasons[what] = why
        self.get_logger().warning(f"dropping {what}: {why}", throttle_duration_sec=1.0)

    def _on_joint_state(self, msg: JointState) -> None:
        measured = self._measured_at("JointState", msg.header)
        if measured is None:
            return
        try:
            hits = self.builder.set_joint_state(msg.name, msg.position, msg.velocity, measured,
                                                _stamp(msg.header.stamp) or None)
        except ValueError as e:
            return self._drop("JointState", str(e))
        if hits == 0:
            return self._drop("JointState", f"none of its joints {list(msg.name)[:4]}... is a joint of {self.spec.name}")
        if self.schedule.on_joint_state(time.monotonic()):
            self.step_requested = True  # the step checks this reading itself
        else:
            self._screen()

    def _screen(self) -> None:
        """Every reading is checked as it arrives (not only the latest at a step): a single
        NaN or impossible sample latches the fault mode even if a good one follows."""
        if self.started and self.builder.ready:
            self.chain.screen(self.builder.robot_state(), time.monotonic())

    def _on_imu(self, msg: Imu) -> None:
        measured = self._measured_at("Imu", msg.header)
        if measured is None:
            return
        o, w, a = msg.orientation, msg.angular_velocity, msg.linear_acceleration
        if msg.orientation_covariance[0] == -1.0:  # REP 145: orientation not provided
            quat = (math.nan,) * 4
        else:
            quat = (o.x, o.y, o.z, o.w)
        accel = None if msg.linear_acceleration_covariance[0] == -1.0 else (a.x, a.y, a.z)
        self.builder.set_imu(quat, (w.x, w.y, w.z), measured, accel)
        self._screen()

    def _on_cmd_vel(self, msg: Twist) -> None:
        v = np.array([msg.linear.x, msg.linear.y, msg.angular.z])
        if not np.isfinite(v).all():
            return self._drop("cmd_vel", f"non-finite {v.tolist()}")
        self.controller.set_cmd_vel(*v, arrival=time.monotonic())  # clipped to the trained range

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
        if p is None:
            return
        measured = self._measured_at("object pose", msg.header)
        if measured is not None:
            self.builder.set_object_pose(p, measured, _stamp(msg.header.stamp) or None)

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
                self.get_logger().error("E-STOP (latched until ~/release_estop)")
            self.chain.estop("operator e-stop on ~/estop")

    def _why_not_still(self) -> str | None:
        """Why a reset / e-stop release must wait (the robot moves, or its speed is unknown)."""
        if not self.builder.ready:
            return None  # nothing commanded yet: the ramp starts from the first reading anyway
        return self.chain.why_not_still(self.builder.robot_state())

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        why = self._why_not_still()
        if why is not None:
            response.success, response.message = False, f"reset refused: {why}"
            self.get_logger().warning(response.message)
            return response
        now = time.monotonic()
        before = {k: v for k, v in self.chain.faults.items() if k != "estop"}
        state = self.builder.robot_state() if self.builder.ready else None
        self.chain.reset(state, now if state is not None else None)
        for tracker in self.stamps.values():
            tracker.reset()
        self.builder.set_last_action(None)
        self.reset_count += 1
        response.success = True
        estop = " (the e-stop stays latched: ~/release_estop)" if "estop" in self.chain.faults else ""
        response.message = (f"cleared {sorted(before) or 'nothing'}; startup ramp restarted from the last command"
                            + estop + ("" if state is not None else f" (waiting for {', '.join(self.builder.missing())})"))
        self.get_logger().info(f"reset: {response.message}")
        return response

    def _on_release_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if "estop" not in self.chain.faults:
            response.success, response.message = True, "the e-stop was not latched"
            return response
        why = self._why_not_still()
        if why is not None:
            response.success, response.message = False, f"e-stop release refused: {why}"
            self.get_logger().warning(response.message)
            return response
        state = self.builder.robot_state() if self.builder.ready else None
        self.chain.release_estop(state, time.monotonic() if state is not None else None)
        others = sorted(k for k in self.chain.faults if k != "estop")
        response.success = True
        response.message = "e-stop released; startup ramp restarted from the last command" + (
            f"; still latched: {others} (~/reset clears them)" if others else "")
        self.get_logger().warning(response.message)
        return response

    # ------------------------------------------------------------------ control loop
    @property
    def started(self) -> bool:
        return self.controller.started

    @property
    def waiting_for(self) -> list[str]:
        return self.controller.waiting_for

    def _step(self, now: float | None = None) -> None:
        """One control step: observation -> policy -> safety chain -> command (+ audit).
        The decision is `PolicyController.step` (the code sim2sim runs); this publishes it."""
        now = time.monotonic() if now is None else now
        if self.last_tick is not None:
            self.periods.append(now - self.last_tick)
        self.last_tick = now
        ctl = self.controller
        if not ctl.started:
            if not ctl.start(now):
                self.get_logger().info(f"waiting for {'; '.join(ctl.waiting_for)}; publishing nothing",
                                       throttle_duration_sec=2.0)
                return
            self.get_logger().info("robot state complete and plausible: startup ramp to the default pose")
        human = None
        if self.intervening:
            if self.teleop_time is not None and now - self.teleop_time <= self.teleop_timeout:
                human = (self.teleop_action, self.teleop_time)
            else:  # stale teleop: the chain holds where it watches commands; else zero action (= hold)
                human = (np.zeros(self.action_size), None)
        out = ctl.step(now, human)
        if out.pending is None and not np.isfinite(out.policy_action).all():
            self.get_logger().error("policy gave a non-finite action (the chain's fault mode)", throttle_duration_sec=1.0)
        self.pending, self.human_action = out.pending, out.human
        cmd = out.cmd
        self._publish_command(cmd)
        if out.gripper is not None:
            self.gripper_width = out.gripper
            self.gripper_pub.publish(Float64MultiArray(data=[out.gripper]))
        self.steps += 1
        if out.pending is None:  # not published while the policy is not run
            self.policy_action_pub.publish(Float64MultiArray(data=[float(v) for v in out.policy_action]))
            self.step_pub.publish(self.step_packer.pack({
                "step": self.steps, "stamp": self.get_clock().now().nanoseconds * 1e-9,
                "reset_count": self.reset_count, "mode": MODES.index(cmd.mode) if cmd.mode in MODES else -1,
                "intervention": self.intervening, "human_action": out.human, "observation": out.obs,
                "policy_action": out.policy_action, "commanded_action": out.action, "applied_action": out.applied}))
        self.executed_action_pub.publish(Float64MultiArray(data=[float(v) for v in out.action]))
        if cmd.mode != self.mode:
            self._publish_mode(cmd.mode)
        self.window.append((now, self.last_latency, out.inference_s))

    def _publish_command(self, cmd) -> None:
        """Send the chain's command, then its ``~/audit`` record."""
        values = array.array("d", cmd.values.tolist())
        if self.interface == "forward_command":
            self.cmd_pub.publish(Float64MultiArray(data=values))
        elif self.interface == "position_gains":
            values.extend(cmd.kp.tolist())
            values.extend(cmd.kd.tolist())
            self.cmd_pub.publish(Float64MultiArray(layout=self.gains_layout, data=values))
        else:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.joint_names = list(cmd.joint_names)
            pt = JointTrajectoryPoint()
            pt.positions = values.tolist()
            sec = int(self.traj_time)
            pt.time_from_start.sec, pt.time_from_start.nanosec = sec, int(round((self.traj_time - sec) * 1e9))
            msg.points = [pt]
            self.cmd_pub.publish(msg)
        # sensor -> command: from when the joints were measured (stamp) to the command leaving
        stamp = self.builder.joint_header_stamp
        self.last_latency = self.get_clock().now().nanoseconds * 1e-9 - stamp if stamp else None
        self.commands_sent += 1
        measured = self.builder.joint_state_time()
        flags = sum(1 << i for i, name in enumerate(self.audit_filters) if name in cmd.interventions)
        self.audit_pub.publish(self.audit_packer.pack({
            "seq": self.commands_sent, "stamp": self.get_clock().now().nanoseconds * 1e-9,
            "mode": MODES.index(cmd.mode) if cmd.mode in MODES else -1,
            "state_age": math.nan if measured is None else time.monotonic() - measured,
            "gains_commanded": self.interface == "position_gains", "interventions": flags,
            "command": cmd.values, "kp": cmd.kp, "kd": cmd.kd, "q": cmd.q, "dq": cmd.dq}))

    def _publish_mode(self, mode: str) -> None:
        self.mode = mode
        self.mode_pub.publish(String(data=mode))
        if mode in ("damping", "estop", "hold"):
            faults = self.chain.faults
            self.get_logger().warning(f"mode {mode}" + (f": {faults}" if faults else ""))
        else:
            self.get_logger().info(f"mode {mode}")

    # ------------------------------------------------------------------ the loop
    def spin(self, executor, stop: threading.Event) -> None:
        """Run the node until `stop` is set: messages and services as they come, the control
        step when it is due (`timing.ControlSchedule`), and before a timer step every message
        already waiting, so a step never runs on older readings than have arrived."""
        schedule = self.schedule
        if self.realtime_priority:
            try:  # this thread only: the control loop preempts ordinary processes (not the kernel's)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            except (OSError, AttributeError) as e:
                self.get_logger().warning(f"realtime_priority {self.realtime_priority} not granted ({e}): "
                                          "normal scheduling")
        schedule.start(time.monotonic())
        failures = 0
        while not stop.is_set() and rclpy.ok(context=self.context):
            try:
                self._spin_once(executor)
                failures = 0
            except Exception as e:  # a bug in a callback must not silence the robot: latch the e-stop, go on
                failures += 1
                self.get_logger().error(f"internal error, e-stop latched: {type(e).__name__}: {e}",
                                        throttle_duration_sec=1.0)
                self.chain.estop(f"internal error: {type(e).__name__}: {e}")
                if failures > 100:
                    raise

    def _spin_once(self, executor) -> None:
        """One turn of `spin`: a due step, or waiting for (and handling) the next message."""
        schedule = self.schedule
        now = time.monotonic()
        if not (self.step_requested or schedule.timer_due(now)):
            executor.spin_once(timeout_sec=min(schedule.timeout(now), 0.05))
            return
        deadline_tick = not self.step_requested
        if schedule.last_step is not None and now - schedule.last_step > 2 * self.dt:
            # the node itself was away (a stall): what the sensors sent meanwhile may still be in
            # DDS's hands; take it first, so that the watchdog judges the sensors on what they
            # sent, not on how long this process slept
            self._catch_up(executor, 0.05)
            self._drain(executor)
        elif deadline_tick:  # a timer step: first what has arrived (an event step runs on its state at once)
            self._drain(executor)
        if deadline_tick:
            _sleep_until(schedule.deadline)  # woken `lead` early to drain: now step on the tick
        self.step_requested = False
        now = time.monotonic()
        try:
            self._step(now)
        finally:
            schedule.stepped(now, deadline_tick)

    def _catch_up(self, executor, limit: float) -> None:
        """After a stall: handle what DDS delivers until the joint reading is fresh again, DDS
        has had nothing more for 3 ms, or `limit` s have passed (the sensors then really are
        silent, and the watchdog says so)."""
        fresh = 0.5 * self.limits.watchdog.joint_states
        now = time.monotonic()
        end, last_news = now + limit, now
        while now < end:
            before = self.callbacks
            executor.spin_once(timeout_sec=min(0.002, end - now))
            now = time.monotonic()
            if self.callbacks != before:
                last_news = now
            measured = self.builder.joint_state_time()
            if measured is not None and now - measured < fresh:
                return
            if now - last_news > 0.003:
                return

    def _drain(self, executor, limit: int = 100) -> None:
        """Handle the callbacks that are ready now, without waiting (at most `limit`)."""
        for _ in range(limit):
            before = self.callbacks
            executor.spin_once(timeout_sec=0.0)
            if self.callbacks == before:
                return

    def publish_safe_command(self) -> bool:
        """Latch the e-stop and publish the chain's safe command once (on shutdown)."""
        if not self.started:
            return False
        self.chain.estop("policy node shutting down")
        cmd = self.chain.step(np.zeros(self.controller.mapping.size), self.builder.robot_state(), time.monotonic())
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
            "waiting_for": "; ".join(self.waiting_for if not self.started else []) or self.pending or "nothing",
            "control_trigger": self.schedule.trigger,
            "executor": self.executor_kind,
            # the node itself ran late (a stall, an overloaded CPU): not a sensor timeout
            "overruns": str(self.schedule.overruns.total),
            "overrun_late_steps": str(self.schedule.overruns.late_steps),
            "overrun_missed_ticks": str(self.schedule.overruns.missed_ticks),
            "overrun_max_ms": f"{self.schedule.overruns.max_lateness * 1e3:.2f}",
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
            values[f"dropped.{what}.last_reason"] = self.drop_reasons.get(what, "")
        self.prev_report, self.prev_report_time = report, now
        st.message = mode + (f" ({', '.join(faults)})" if faults else "")
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return st

    def _publish_diagnostics(self, *_) -> None:  # (the events executor passes timer info)
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics()]
        self.diag_pub.publish(msg)


def _sleep_until(t: float) -> None:
    """Wait until monotonic time `t`: sleep, then spin for the last 0.1 ms (sleep overshoots)."""
    left = t - time.monotonic()
    if left > 2e-4:
        time.sleep(left - 1e-4)
    while time.monotonic() < t:
        pass


def make_executor(kind: str):
    """rclpy's SingleThreadedExecutor ("single") or the C++ EventsExecutor ("events")."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor()
    from rclpy.executors import SingleThreadedExecutor

    return SingleThreadedExecutor()


def run(ros_args: list[str]) -> int:
    """Run the node with `ros_args` (as after `--ros-args`); returns an exit code.

    1: the bundle was refused (wrong robot, damaged, unknown runtime); 2: a bad parameter."""
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
        executor = make_executor(node.executor_kind)
        try:
            executor.add_node(node)
            node.spin(executor, stop)
            if node.publish_safe_command():
                print("[policy_node] shutting down: published the safe command "
                      f"({node.mode}, {node.spec.safety.fault_mode})", flush=True)
                end = time.monotonic() + 0.2  # let DDS deliver it
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.02)
        finally:
            executor.shutdown()
            node.destroy_node()
    return 0
