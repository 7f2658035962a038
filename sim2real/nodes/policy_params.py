"""The policy node's parameters: names, defaults and descriptions (`PARAMETERS`, `SAFETY_KEYS`),
declaring them on the node (`declare_parameters`) and checking their values (`read_settings`).

Defaults, lowest precedence first: `PARAMETERS`, then the robot kind's
``config/policy_node_<kind>.yaml`` (`roboreal.sim2real.nodes.params`), then params files and
-p overrides. ``safety.<key>`` parameters default to robot.yaml's ``safety:`` values and may
only tighten them (`SafetyLimits.tighten`). A bad value is a `ConfigError` naming the parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from roboreal.config import ConfigError
from roboreal.robots.spec import RobotSpec, load_robot
from roboreal.sim2real.nodes.params import default_parameters
from roboreal.sim2real.nodes.timing import TRIGGERS
from roboreal.sim2real.safety import LIMIT_KEYS, SafetyLimits

NODE_NAME = "policy_node"
COMMAND_INTERFACES = ("forward_command", "position_gains", "joint_trajectory")
IMAGE_TRANSPORTS = ("raw", "compressed")

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
    "image_transport": ("raw", "camera images (bundles with images): raw (sensor_msgs/Image on the manifest's topic) | "
                               "compressed (sensor_msgs/CompressedImage on <topic>/compressed)"),
    "resize": (False, "resize a camera image of another resolution to the manifest's with cv2.INTER_AREA; "
                      "false: refuse it (the chain's fault mode)"),
    "image_timeout": (0.0, "s after which a camera's image is stale: the chain's fault mode "
                           "(0: safety.watchdog.command)"),
    "last_action_source": ("executed", "what policy.last_action observes: commanded (the action fed to the chain) | "
                                       "applied (the chain's output mapped back to the action space) | executed "
                                       "(commanded in policy mode, applied while the chain ramps/holds/damps)"),
}
SAFETY_KEYS = LIMIT_KEYS  # every robot.yaml safety limit, as `safety.<key>` parameters (derived from SafetySpec)


@dataclass
class DeclaredParameters:
    """The node's parameters as declared: the robot, the bundle path, the values of
    `PARAMETERS`, and the safety limits of robot.yaml with the (not yet checked) overrides."""

    spec: RobotSpec
    bundle_path: str
    values: dict[str, Any]
    spec_limits: SafetyLimits
    safety_overrides: dict[str, Any]


@dataclass
class NodeSettings:
    """The checked parameter values the node runs with (`read_settings`)."""

    limits: SafetyLimits  # robot.yaml's, tightened by the safety.* parameters
    interface: str  # one of COMMAND_INTERFACES
    trigger: str  # one of timing.TRIGGERS
    executor_kind: str  # single | events
    realtime_priority: int  # 0: normal scheduling
    require_stamps: bool
    traj_time: float  # s, the JointTrajectory point's time_from_start
    teleop_timeout: float  # s
    object_timeout: float  # s
    diag_period: float  # s
    goal_frames: set[str]
    cmd_min: np.ndarray  # (vx, vy, yaw rate) narrowing the trained command ranges
    cmd_max: np.ndarray
    last_action_source: str  # checked by PolicyController
    image_transport: str = "raw"  # raw | compressed
    resize: bool = False  # resize camera images of another resolution (cv2.INTER_AREA)
    image_timeout: float = 0.5  # s: a camera older than this latches the chain's watchdog


def declare_parameters(node: Node) -> DeclaredParameters:
    """Declare every parameter on `node` (defaults: module docstring) and return their values.
    Unknown parameters given at launch are logged and ignored."""
    dyn = dict(dynamic_typing=True)
    robot = str(node.declare_parameter("robot", "", ParameterDescriptor(
        description="a robot name, or a path to a robot.yaml or its folder", **dyn)).value or "")
    bundle_path = str(node.declare_parameter("bundle", "", ParameterDescriptor(
        description="policy bundle directory", **dyn)).value or "")
    if not robot:
        raise ConfigError("robot", "not set: pass --robot NAME|PATH or --ros-args -p robot:=NAME|PATH")
    if not bundle_path:
        raise ConfigError("bundle", "not set: pass the bundle directory or --ros-args -p bundle:=PATH")
    spec = load_robot(robot)
    defaults = default_parameters(NODE_NAME, spec, known={"robot", "bundle", *PARAMETERS,
                                                          *(f"safety.{s}" for s in SAFETY_KEYS)})
    values = {name: node.declare_parameter(name, defaults.get(name, default),
                                           ParameterDescriptor(description=desc, **dyn)).value
              for name, (default, desc) in PARAMETERS.items()}
    # Safety: defaults are robot.yaml's; any value that differs must tighten it.
    base = SafetyLimits.from_spec(spec)
    overrides = {}
    for key in SAFETY_KEYS:
        spec_value = base.get(key)
        if isinstance(spec_value, tuple):
            spec_value = list(spec_value)
        value = node.declare_parameter(f"safety.{key}", defaults.get(f"safety.{key}", spec_value),
                                       ParameterDescriptor(description=f"tighten robot.yaml safety.{key}",
                                                           **dyn)).value
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            value = [float(v) for v in value]
        if value != spec_value:
            overrides[key] = value
    known = {"robot", "bundle", "use_sim_time", "start_type_description_service", *PARAMETERS,
             *(f"safety.{k}" for k in SAFETY_KEYS)}
    stray = sorted(k for k in getattr(node, "_parameter_overrides", {}) if k not in known
                   and not k.startswith("qos_overrides."))
    if stray:
        node.get_logger().warning(f"unknown parameter(s) ignored: {stray}")
    return DeclaredParameters(spec, bundle_path, values, base, overrides)


def read_settings(declared: DeclaredParameters, manifest: dict, dt: float) -> NodeSettings:
    """Check the declared values against the robot and the (loaded) bundle's `manifest`;
    the first bad one is a `ConfigError` naming it."""
    p, spec = declared.values, declared.spec
    overrides = declared.safety_overrides
    limits = declared.spec_limits.tighten(**overrides) if overrides else declared.spec_limits
    interface = str(p["command_interface"] or spec.ros.command_interface)
    if interface not in COMMAND_INTERFACES:
        raise ConfigError("command_interface",
                          f"expected forward_command, position_gains or joint_trajectory, got {interface!r}")
    if interface != "forward_command" and spec.control_mode != "position":
        raise ConfigError("command_interface", f"{interface} needs a position-controlled robot; "
                          f"{spec.name} is {spec.control_mode}-controlled")
    trigger = str(p["control_trigger"])
    if trigger not in TRIGGERS:
        raise ConfigError("control_trigger", f"expected one of {list(TRIGGERS)}, got {trigger!r}")
    executor_kind = str(p["executor"])
    if executor_kind not in ("single", "events"):
        raise ConfigError("executor", f"expected single or events, got {executor_kind!r}")
    realtime_priority = int(p["realtime_priority"])
    if not 0 <= realtime_priority <= 99:
        raise ConfigError("realtime_priority", f"expected 0 (off) or 1-99, got {realtime_priority}")
    require = p["require_stamps"]
    if not isinstance(require, bool):
        raise ConfigError("require_stamps", f"expected true or false, got {require!r}")
    traj_time = float(p["trajectory_time_from_start"]) or dt
    wd_cmd = limits.watchdog.command
    teleop_timeout = float(p["teleop_action_timeout"]) or wd_cmd
    object_timeout = float(p["object_pose_timeout"]) or wd_cmd
    diag_period = float(p["diagnostics_period"])
    if not diag_period > 0:
        raise ConfigError("diagnostics_period", f"must be positive, got {diag_period}")
    image_transport = str(p["image_transport"])
    if image_transport not in IMAGE_TRANSPORTS:
        raise ConfigError("image_transport", f"expected one of {', '.join(IMAGE_TRANSPORTS)}, got {image_transport!r}")
    resize = p["resize"]
    if not isinstance(resize, bool):
        raise ConfigError("resize", f"expected true or false, got {resize!r}")
    image_timeout = float(p["image_timeout"]) or wd_cmd
    if not image_timeout > 0:
        raise ConfigError("image_timeout", f"must be positive (0: safety.watchdog.command), got {p['image_timeout']}")
    frames = [str(f) for f in p["goal_frame_ids"]]
    if frames == [""]:  # the frames the policy's goals were given in during training
        frames = list(((manifest.get("inputs") or {}).get("goal") or {}).get("frame_ids") or ["", "world"])
    return NodeSettings(
        limits=limits, interface=interface, trigger=trigger, executor_kind=executor_kind,
        realtime_priority=realtime_priority, require_stamps=require, traj_time=traj_time,
        teleop_timeout=teleop_timeout, object_timeout=object_timeout, diag_period=diag_period,
        goal_frames=set(frames), cmd_min=_floats("cmd_vel_min", p["cmd_vel_min"], 3),
        cmd_max=_floats("cmd_vel_max", p["cmd_vel_max"], 3), last_action_source=str(p["last_action_source"]),
        image_transport=image_transport, resize=resize, image_timeout=image_timeout)


def resolve_topics(values: dict[str, Any], spec: RobotSpec) -> dict[str, str]:
    """The topics the node talks to the robot on: a "" parameter means robot.yaml's ``ros:`` name
    ("" where the robot names none)."""
    ros = spec.ros
    topic = lambda key, fallback: str(values[key] or (fallback or ""))  # noqa: E731
    return {
        "joint_states": topic("joint_states_topic", ros.joint_states),
        "imu": topic("imu_topic", ros.imu), "cmd_vel": topic("cmd_vel_topic", ros.cmd_vel),
        "goal": topic("goal_topic", ros.goal), "object_pose": topic("object_pose_topic", ros.object_pose),
        "joint_commands": topic("joint_commands_topic", ros.joint_commands),
        "gripper_commands": topic("gripper_commands_topic", ros.gripper_commands),
    }


def _floats(name: str, value: Any, n: int) -> np.ndarray:
    try:
        a = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {n} numbers, got {value!r}") from None
    if len(a) != n:
        raise ConfigError(name, f"expected {n} numbers, got {len(a)}")
    return a
