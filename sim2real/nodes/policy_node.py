"""The policy node (`roboreal deploy BUNDLE --robot NAME`): a bundle driving a robot over ROS 2.
(Over 400 lines: most of it is the operator's reference below, kept beside the code it describes.)

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
velocity (and, for quadrupeds, an IMU message; for a policy with cameras, a fresh image of
the manifest's size and encoding from each camera) has arrived, and the readings are finite
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
  * bundles that see cameras (manifest ``images``), sensor-data QoS: each camera's
    sensor_msgs/Image on the manifest's ``topic`` (``image_transport`` raw; remap it with
    ``-r /camera/front/image_raw:=/your/topic``) or sensor_msgs/CompressedImage on
    ``<topic>/compressed`` (``image_transport`` compressed; jpeg/png, decoded with OpenCV),
    and a depth camera's 16UC1 / 32FC1 Image on ``depth.topic`` (`images.py`). rgb8 is fed
    as is; bgr8, rgba8 and bgra8 are converted to RGB; mono8, another encoding, a
    resolution other than the manifest's (unless ``resize``: cv2.INTER_AREA), an empty
    message or a buffer that does not match its width / height / step are refused: the node
    does not start, or (running) latches the chain's fault mode (plausibility: the camera
    and why), and the diagnostics say which camera and why. An image is aged by its header
    stamp like the joint states; one older than ``image_timeout`` latches the chain's
    watchdog (the same fault mode as stale joint states). The policy is called with the
    latest image of every camera (`policy_bundle.ImageFedPolicy`).
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

Parameters (defaults: `policy_params.PARAMETERS`, then the robot kind's
``config/policy_node_<kind>.yaml`` (quadruped, manipulator, cartpole;
`roboreal.sim2real.nodes.params`), then params files / -p overrides): see `PARAMETERS` in
`policy_params.py`. ``robot`` is a robot name or a path to a robot.yaml or its
folder (any robot: no per-robot YAML is needed); ``bundle`` the bundle directory;
``safety.<field>`` (the robot.yaml ``safety:`` keys, e.g. ``safety.velocity_scale``,
``safety.watchdog.command``) may only TIGHTEN the robot's limits (`SafetyLimits.tighten`
refuses loosening: the node exits with status 2).

The node's parts: this module builds its ROS interfaces, runs the control step and publishes
what it decides; `policy_params.py` declares and checks the parameters; `policy_inputs.py`
holds the subscription and service callbacks; `policy_loop.py` the executor and the loop;
`policy_status.py` ``~/info`` and the diagnostics.
"""

from __future__ import annotations

import array
import collections
import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension, MultiArrayLayout, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from roboreal.config import ConfigError
from roboreal.policy_bundle import BundleError, ImageFedPolicy, load_bundle
from roboreal.sim2real.nodes.controller import PolicyController
from roboreal.sim2real.nodes.images import CameraInput, camera_topics
from roboreal.sim2real.nodes.policy_inputs import PolicyNodeInputs
from roboreal.sim2real.nodes.policy_loop import PolicyNodeLoop, make_executor
from roboreal.sim2real.nodes.policy_params import NODE_NAME, declare_parameters, read_settings, resolve_topics
from roboreal.sim2real.nodes.policy_status import PolicyNodeStatus
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.step_record import MODES, SegmentPacker, StepPacker, audit_fields, info_json
from roboreal.sim2real.nodes.timing import ControlSchedule, StampTracker


class PolicyNode(PolicyNodeInputs, PolicyNodeLoop, PolicyNodeStatus, Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declared = declare_parameters(self)
        self.spec = spec = declared.spec
        bundle_path, p = declared.bundle_path, declared.values

        # ----- the bundle (refused unless it matches this robot) -----
        runtime = str(p["runtime"])
        self.bundle = load_bundle(bundle_path, robot=spec, runtime=runtime)
        m = self.bundle.manifest
        self.dt = float(m["control"]["dt"])

        # ----- parameters -----
        self.settings = s = read_settings(declared, m, self.dt)
        self.limits = s.limits
        self.schedule = ControlSchedule(self.dt, s.trigger)
        future = self.limits.watchdog.future_stamp
        # the cameras the policy sees (manifest ``images``), in its call order
        self.cameras = [CameraInput.from_manifest(e, resize=s.resize) for e in self.bundle.image_inputs]
        self.camera_waiting: list[str] = []  # why the cameras do not let the node start yet
        self.stamps = {what: StampTracker(what, future, s.require_stamps)
                       for what in ("JointState", "Imu", "object pose",
                                    *(f"camera {c.name}{part}" for c in self.cameras for part in ("", " depth")))}
        # The control step itself (observation -> policy -> chain) is the ROS-free controller
        # sim2sim runs too. The gains travel with the command only on position_gains;
        # otherwise the robot applies robot.yaml's, and the chain must not count on any other.
        # A policy that sees cameras gets the latest image of each (the node starts only with all
        # of them and supervises them every step; a missing one would raise: the fault mode).
        policy = (ImageFedPolicy(self.bundle, lambda: {c.name: c.latest() for c in self.cameras})
                  if self.cameras else self.bundle)
        self.controller = PolicyController(
            policy, spec, self.limits,
            gains="commanded" if s.interface == "position_gains" else "fixed",
            last_action_source=s.last_action_source, object_timeout=s.object_timeout,
            cmd_min=s.cmd_min, cmd_max=s.cmd_max)
        self.chain, self.builder = self.controller.chain, self.controller.builder
        self.action_size = self.controller.action_size
        self.has_gripper_action = self.controller.has_gripper_action

        # ----- state -----
        self.step_requested = False  # event-driven control: a JointState asked for a step
        self.pending: str | None = None  # why the policy is not run (the chain holds)
        self.intervening = False
        self.teleop_action: np.ndarray | None = None
        self.teleop_time: float | None = None
        self.mode = "waiting"
        self.steps = 0
        self.reset_count = 0  # ~/reset calls: the recorder's episode boundary
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
        self.topics = resolve_topics(p, spec)
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
        self.image_topics: dict[str, str] = {}
        for cam, entry in zip(self.cameras, self.bundle.image_inputs):
            if s.image_transport == "compressed":
                topic = camera_topics(str(entry["topic"]))["compressed"]
                self._subscribe(CompressedImage, topic, lambda msg, c=cam: self._on_image(c, msg), qos_profile_sensor_data)
            else:
                topic = str(entry["topic"])
                self._subscribe(Image, topic, lambda msg, c=cam: self._on_image(c, msg), qos_profile_sensor_data)
            self.image_topics[cam.name] = topic
            if entry.get("depth"):
                self.image_topics[f"{cam.name} depth"] = entry["depth"]["topic"]
                self._subscribe(Image, entry["depth"]["topic"], lambda msg, c=cam: self._on_depth(c, msg),
                                qos_profile_sensor_data)
        self._subscribe(Bool, str(p["intervention_topic"]), self._on_intervention, reliable)
        self._subscribe(Float64MultiArray, str(p["teleop_action_topic"]), self._on_teleop_action, reliable)
        self._subscribe(Bool, "~/estop", self._on_estop, reliable)
        self.create_service(Trigger, "~/reset", self._counted(self._on_reset))
        self.create_service(Trigger, "~/release_estop", self._counted(self._on_release_estop))

        if s.interface == "joint_trajectory":
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
        self.create_timer(s.diag_period, self._counted(self._publish_diagnostics))
        tightened = f"; tightened {declared.safety_overrides}" if declared.safety_overrides else ""
        self.get_logger().info(
            f"{spec.name}: bundle {bundle_path} ({m['training']['task']}, {m['training']['algo']}, {runtime}), "
            f"{1 / self.dt:.0f} Hz, obs {self.builder.size} from {[t.name for t in self.builder.terms]}, "
            f"commands ({s.interface}) on {self.topics['joint_commands']}"
            f"{', gripper on ' + self.topics['gripper_commands'] if self.gripper_pub else ''}{tightened}"
            f"{self._describe_cameras()}; waiting for {', '.join(self.builder.missing() + self._cameras_waiting())}")

    # ------------------------------------------------------------------ control loop
    @property
    def started(self) -> bool:
        return self.controller.started

    @property
    def waiting_for(self) -> list[str]:
        return self.camera_waiting + self.controller.waiting_for

    def _step(self, now: float | None = None) -> None:
        """One control step: observation -> policy -> safety chain -> command (+ audit).
        The decision is `PolicyController.step` (the code sim2sim runs); this publishes it."""
        now = time.monotonic() if now is None else now
        if self.last_tick is not None:
            self.periods.append(now - self.last_tick)
        self.last_tick = now
        ctl = self.controller
        if not ctl.started:
            self.camera_waiting = self._cameras_waiting(now)
            if self.camera_waiting or not ctl.start(now):
                self.get_logger().info(f"waiting for {'; '.join(self.waiting_for)}; publishing nothing",
                                       throttle_duration_sec=2.0)
                return
            self.get_logger().info("robot state complete and plausible: startup ramp to the default pose")
        if self.cameras:
            self._supervise_cameras(now)
        human = None
        if self.intervening:
            if self.teleop_time is not None and now - self.teleop_time <= self.settings.teleop_timeout:
                human = (self.teleop_action, self.teleop_time)
            else:  # stale teleop: the chain holds where it watches commands; else zero action (= hold)
                human = (np.zeros(self.action_size), None)
        out = ctl.step(now, human)
        if out.pending is None and not np.isfinite(out.policy_action).all():
            self.get_logger().error("policy gave a non-finite action (the chain's fault mode)", throttle_duration_sec=1.0)
        self.pending = out.pending
        cmd = out.cmd
        self._publish_command(cmd)
        if out.gripper is not None:
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
        interface = self.settings.interface
        if interface == "forward_command":
            self.cmd_pub.publish(Float64MultiArray(data=values))
        elif interface == "position_gains":
            values.extend(cmd.kp.tolist())
            values.extend(cmd.kd.tolist())
            self.cmd_pub.publish(Float64MultiArray(layout=self.gains_layout, data=values))
        else:
            msg = JointTrajectory()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.joint_names = list(cmd.joint_names)
            pt = JointTrajectoryPoint()
            pt.positions = values.tolist()
            traj_time = self.settings.traj_time
            sec = int(traj_time)
            pt.time_from_start.sec, pt.time_from_start.nanosec = sec, int(round((traj_time - sec) * 1e9))
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
            "gains_commanded": interface == "position_gains", "interventions": flags,
            "command": cmd.values, "kp": cmd.kp, "kd": cmd.kd, "q": cmd.q, "dq": cmd.dq}))

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
        cmd = self.chain.step(np.zeros(self.controller.mapping.size), self.builder.robot_state(), time.monotonic())
        self._publish_command(cmd)
        self._publish_mode(cmd.mode)
        return True


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
        executor = make_executor(node.settings.executor_kind)
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
