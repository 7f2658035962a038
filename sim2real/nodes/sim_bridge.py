"""The MuJoCo simulation as the robot, over ROS 2 (`roboreal sim-bridge`).

Speaks exactly what a real robot's driver speaks, in real time (wall-clock paced):

publishes
  * `sensor_msgs/JointState` on the spec's `ros.joint_states` (every spec joint, plus the
    gripper's finger joints; position, velocity, effort), sensor-data QoS (best effort:
    subscribe with a best-effort / sensor-data profile);
  * quadrupeds: `sensor_msgs/Imu` on `ros.imu` (orientation from the IMU framequat sensor,
    angular velocity from the gyro, linear acceleration from the accelerometer, which
    includes the reaction to gravity: +9.81 m/s^2 up at rest), sensor-data QoS;
  * manipulators: `geometry_msgs/PoseStamped` of the end-effector site on `~/ee_pose`
    (frame `world`, which is the robot base), sensor-data QoS;
  * robots with a free-floating base (legged robots): the simulator's ground truth, which
    no real driver has, for scoring (sim2sim over DDS): `~/base_pose` (PoseStamped, frame
    `world`) and `~/base_twist` (TwistStamped, base frame), without latency or noise;
  * robots whose spec names `ros.object_pose` (pick tasks): the object's pose as an
    object tracker would publish it (`geometry_msgs/PoseStamped`, frame `world`, on that
    topic, sensor-data QoS, with the same latency as the other sensors).
  * cameras (only those asked for: `bundle` and/or `cameras` below), each at `camera_rate`,
    sensor-data QoS, stamped when the state they show was measured, with the sensors'
    latency, frame `<camera>_optical_frame` (see `images.py` for the layout):
    `sensor_msgs/Image` rgb8 on the camera's topic (default `/camera/<name>/image_raw`),
    `sensor_msgs/CameraInfo` on `/camera/<name>/camera_info` (a pinhole model from the
    camera's fovy: fy = h / (2 tan(fovy / 2)), fx = fy, cx = w / 2, cy = h / 2), depth
    cameras a 16UC1 (mm) Image on `/camera/<name>/depth/image_raw`, and with
    `compressed_images` a `sensor_msgs/CompressedImage` on `<image topic>/compressed`.
    Rendered from the bridge's own MuJoCo state with the training renderer's speed-first
    settings (`envs.sim.camera_renderer`: no shadows, reflections or multisampling; the goal
    marker hidden, unless the bundle's images show it: then drawn as trained at the goal
    heard on its topic, `sim_cameras.py`). With `randomize` and a `bundle`, the cameras are randomized too, drawn
    once at startup like the physics: the bundle's training task's camera randomization, its
    ranges x1.5 for `heavy` (as `roboreal sim2sim`'s heavy preset), x1 for `mild`, or a YAML
    file's `randomization.camera` / `camera_scale` (`sim_cameras.camera_randomization_for`).

subscribes (like ros2_control's controllers; reliable, depth 10)
  * `ros.joint_commands`: `std_msgs/Float64MultiArray` (forward command controller):
    one value per actuated joint in spec order; positions for position-controlled robots,
    efforts (N or Nm) for force-controlled ones (cartpole). Wrong length / NaN: warned
    and ignored. Targets are clipped to the joint limits, efforts to the torque limits.
  * or, when `command_interface` is `position_gains` (position-controlled robots; drivers
    that take per-joint gains with every command, like Unitree's motor commands q, kp, kd):
    `std_msgs/Float64MultiArray` on the same topic with 3N values for the N actuated joints
    in spec order: `[q_1..q_N, kp_1..kp_N, kd_1..kd_N]` (positions in rad or m, kp in
    N m/rad or N/m, kd in N m s/rad or N s/m). Publishers should label the layout
    `dim = [(label "interface", size 3, stride 3N), (label "joint", size N, stride N)]`;
    the bridge ignores the layout and checks only the length. Each command sets the
    position targets (clipped to the joint limits) AND the servos' gains, which hold until
    the next command: torque = kp (q_target - q) - kd dq, clipped to the torque limit
    (kp = 0, kd > 0: pure damping, the joint is not pulled anywhere). A command of the
    wrong length, with a NaN/inf, or with a negative gain is warned about and ignored
    whole (targets and gains unchanged). Until the first command, and after `~/reset`, the
    model's gains (robot.yaml's kp/kd) apply.
  * or, when `command_interface` is `joint_trajectory`, `trajectory_msgs/JointTrajectory`
    on the same topic: joints mapped by name (unnamed joints keep their targets), the
    target moves linearly from the current target through the points at their
    `time_from_start`, then holds the last point (see `sim_robot.TrajectoryFollower`).
  * `ros.gripper_commands` (robots with a gripper): `std_msgs/Float64MultiArray` with the
    finger opening in m (one value, or one per finger: their mean), clipped to
    [closed, open].

Until the first command arrives the robot holds its initial pose (position robots) or
gets zero force (force robots).

service `~/reset` (`std_srvs/Trigger`): back to the initial pose, holding it with the
model's gains; pending commands, trajectories and delayed messages are dropped.

Parameters (ROS parameters, read at startup; set them with a params file, `--ros-args
-p name:=value`, or the CLI flags of `roboreal sim-bridge`). Defaults come from this code,
then from the robot (`roboreal.sim2real.nodes.params`: publish_rate and initial_pose are
derived from robot.yaml and the model; roboreal's own robots may ship
`config/sim_bridge_<robot>.yaml`), then from what is passed. No robot needs a YAML file:

  robot                  a robot name (robots/<name>, $ROBOREAL_ROBOT_PATH, entry points) or
                         a path to a robot.yaml or its folder (required)
  publish_rate           Hz of JointState / Imu / ee_pose (and of command application);
                         default 1 / physics_dt (robot.yaml's, else the model's timestep)
  real_time_factor       simulated seconds per wall-clock second (1.0 = real time)
  initial_pose           `default` (the spec's default pose) or an MJCF keyframe name;
                         default `home` (the MJCF's keyframe, or one build_model derives
                         from robot.yaml's default pose when the MJCF has none)
  command_interface      forward_command | position_gains | joint_trajectory (default: the spec's)
  randomize              randomize the model once at startup (seeded), with `randomization`
  randomization          mild | heavy (`roboreal.envs.randomization.PRESETS`) or a YAML file
                         with a `randomization:` section, applied by the training envs' own
                         Randomizer (friction, masses, centre of mass, gains, motor strength...);
                         with `bundle`, its cameras too (see cameras above)
  joint_position_noise   std of Gaussian noise on reported joint positions (rad or m)
  joint_velocity_noise   std of Gaussian noise on reported joint velocities
  imu_noise              std of Gaussian noise on the IMU angular velocity (rad/s)
  imu_accel_noise        std of Gaussian noise on the IMU linear acceleration (m/s^2)
  imu_orientation_noise  std (rad) of a random small rotation applied to the IMU orientation
  latency                s of delay on outgoing sensor messages (stamped when measured,
                         published `latency` later; quantized to the publish period)
  command_latency        s of delay before an incoming command takes effect
  seed                   seed of the noise and randomization
  bundle                 a policy bundle directory: publish the cameras its manifest's `images`
                         lists (size, topic, and where the training camera sat: a task's
                         fixed camera such as panda-pick-vision's `front` is added to the
                         model from the manifest's `mount`); "" (default): none
  cameras                names of robot.yaml cameras to publish as well (e.g. [wrist]); [""]
                         (default): none. Rendering costs CPU, so nothing is rendered unless asked
  camera_rate            Hz of camera images; 0 (default): the bundle's control rate, else 30
  compressed_images      "" (default) | jpeg | png: also publish CompressedImage (cv2.imencode)

The simulation runs in its own thread: every publish period it applies the commands
that are due, steps the physics (at the model's timestep) up to the wall-clock time, then
publishes. A publish rate above the physics rate repeats the latest state. If the
machine cannot keep up it skips ahead (warning) rather than falling further behind.
Stamps are the node's ROS clock at measurement (no /clock is published).

Over 400 lines only with its reference above (topics, parameters, timing): the node's own
code is about 350 lines, one job (its cameras are `sim_cameras.SimCameras`).
"""

from __future__ import annotations

import array
import collections
import contextlib
import os
import threading
import time
from typing import Any

# Cameras render offscreen: headless EGL unless the caller chose a backend (MuJoCo reads this
# when it is first imported, just below).
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from roboreal.config import ConfigError
from roboreal.robots.spec import load_robot
from roboreal.sim2real.nodes.sim_cameras import SimCameras
from roboreal.sim2real.nodes.params import default_parameters
from roboreal.sim2real.nodes.process import ros_until_signal
from roboreal.sim2real.nodes.sim_robot import SimRobot, TrajectoryFollower

NODE_NAME = "sim_bridge"
INTERFACES = ("forward_command", "position_gains", "joint_trajectory")

# name -> (default, description). The robot's own defaults (publish rate, initial pose) come
# from `params.default_parameters` (derived from robot.yaml and the model).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "publish_rate": (200.0, "Hz of JointState/Imu/ee_pose publishing and command application"),
    "real_time_factor": (1.0, "simulated seconds per wall-clock second"),
    "initial_pose": ("default", "'default' (the spec's default pose) or an MJCF keyframe name"),
    "command_interface": ("", "forward_command | position_gains | joint_trajectory (empty: the robot spec's)"),
    "randomize": (False, "randomize the model once at startup (see randomization)"),
    "randomization": ("mild", "mild | heavy | a YAML file with a randomization: section"),
    "joint_position_noise": (0.0, "std of noise on reported joint positions"),
    "joint_velocity_noise": (0.0, "std of noise on reported joint velocities"),
    "imu_noise": (0.0, "std of noise on the IMU angular velocity, rad/s"),
    "imu_accel_noise": (0.0, "std of noise on the IMU linear acceleration, m/s^2"),
    "imu_orientation_noise": (0.0, "std (rad) of a random rotation applied to the IMU orientation"),
    "latency": (0.0, "s of delay on outgoing sensor messages"),
    "command_latency": (0.0, "s of delay before incoming commands take effect"),
    "seed": (0, "seed of noise and randomization"),
    "bundle": ("", "a policy bundle: publish the cameras its manifest's images list"),
    "cameras": ([""], "robot.yaml cameras to publish as well ([\"\"]: none)"),
    "camera_rate": (0.0, "Hz of camera images (0: the bundle's control rate, else 30)"),
    "compressed_images": ("", "also publish CompressedImage on <image topic>/compressed: jpeg | png (\"\": no)"),
}


def _float(name: str, value: Any, minimum: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected a number, got {value!r}") from None
    if not np.isfinite(v) or (minimum is not None and v < minimum):
        raise ConfigError(name, f"must be a finite number >= {minimum}, got {value!r}")
    return v


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw])


def _doubles(x: np.ndarray) -> array.array:
    return array.array("d", np.asarray(x, dtype=np.float64).tolist())


class SimBridge(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        dyn = dict(dynamic_typing=True)
        robot = self.declare_parameter("robot", "", ParameterDescriptor(
            description="a robot name, or a path to a robot.yaml or its folder", **dyn)).value
        if not robot:
            raise ConfigError("robot", "not set: pass --robot NAME|PATH or --ros-args -p robot:=NAME|PATH")
        self.spec = load_robot(str(robot))
        defaults = default_parameters(NODE_NAME, self.spec, known={"robot", *PARAMETERS})
        p = {name: self.declare_parameter(name, defaults.get(name, default),
                                          ParameterDescriptor(description=desc, **dyn)).value
             for name, (default, desc) in PARAMETERS.items()}
        # rclpy silently ignores overrides of undeclared parameters: name them (typos).
        known = {"robot", "use_sim_time", "start_type_description_service", *PARAMETERS}
        stray = sorted(k for k in getattr(self, "_parameter_overrides", {}) if k not in known
                       and not k.startswith("qos_overrides."))
        if stray:
            self.get_logger().warning(f"unknown parameter(s) ignored: {stray} (known: {sorted(known)})")

        self.publish_rate = _float("publish_rate", p["publish_rate"], 1e-3)
        self.real_time_factor = _float("real_time_factor", p["real_time_factor"], 1e-3)
        self.pos_noise = _float("joint_position_noise", p["joint_position_noise"], 0)
        self.vel_noise = _float("joint_velocity_noise", p["joint_velocity_noise"], 0)
        self.gyro_noise = _float("imu_noise", p["imu_noise"], 0)
        self.acc_noise = _float("imu_accel_noise", p["imu_accel_noise"], 0)
        self.quat_noise = _float("imu_orientation_noise", p["imu_orientation_noise"], 0)
        self.latency = _float("latency", p["latency"], 0)
        self.command_latency = _float("command_latency", p["command_latency"], 0)
        seed = int(_float("seed", p["seed"]))
        interface = str(p["command_interface"] or self.spec.ros.command_interface)
        if interface not in INTERFACES:
            raise ConfigError("command_interface", f"expected one of {', '.join(INTERFACES)}, got {interface!r}")
        if interface != "forward_command" and self.spec.control_mode != "position":
            raise ConfigError("command_interface", f"{interface} needs a position-controlled robot; "
                              f"{self.spec.name} is {self.spec.control_mode}-controlled")
        self.interface = interface

        randomization = str(p["randomization"]) if _bool("randomize", p["randomize"]) else None
        self.sim = SimRobot(self.spec, initial_pose=str(p["initial_pose"]), randomization=randomization, seed=seed)
        if interface == "position_gains" and not self.sim.gains_settable:
            raise ConfigError("command_interface", f"position_gains needs MuJoCo <position> servos with gear 1 on "
                              f"the actuated joints; {self.spec.model_path} has other actuators")
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.lock = threading.Lock()
        self.trajectory: TrajectoryFollower | None = None
        self.pending_commands: collections.deque = collections.deque()  # (apply_at, kind, value)
        self.outbox: collections.deque = collections.deque()  # (publish_at, publisher, msg)
        self.first_command_received = False
        self.stats = {"published": 0, "commands": 0, "ignored": 0, "skips": 0}
        self._reset_clock = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at: float | None = None

        ros = self.spec.ros
        self.joint_state_pub = self.create_publisher(JointState, ros.joint_states, qos_profile_sensor_data)
        self.imu_pub = (self.create_publisher(Imu, ros.imu, qos_profile_sensor_data)
                        if self.sim.has_imu and ros.imu else None)
        self.ee_pub = (self.create_publisher(PoseStamped, "~/ee_pose", qos_profile_sensor_data)
                       if self.spec.has_end_effector and self.sim.has_end_effector else None)
        self.object_pub = (self.create_publisher(PoseStamped, ros.object_pose, qos_profile_sensor_data)
                           if self.sim.has_object else None)
        self.base_pose_pub = (self.create_publisher(PoseStamped, "~/base_pose", qos_profile_sensor_data)
                              if self.sim.has_free_base else None)
        self.base_twist_pub = (self.create_publisher(TwistStamped, "~/base_twist", qos_profile_sensor_data)
                               if self.sim.has_free_base else None)
        command_qos = QoSProfile(depth=10)  # reliable, volatile: ros2_control's SystemDefaultsQoS
        if interface == "forward_command":
            self.create_subscription(Float64MultiArray, ros.joint_commands, self._on_command, command_qos)
        elif interface == "position_gains":
            self.create_subscription(Float64MultiArray, ros.joint_commands, self._on_position_gains, command_qos)
        else:
            self.create_subscription(JointTrajectory, ros.joint_commands, self._on_trajectory, command_qos)
        if self.sim.has_gripper and ros.gripper_commands:
            self.create_subscription(Float64MultiArray, ros.gripper_commands, self._on_gripper, command_qos)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if isinstance(p["cameras"], str):  # -p cameras:=wrist
            p["cameras"] = [p["cameras"]]
        self.cameras = (SimCameras(self, p["bundle"], p["cameras"], _float("camera_rate", p["camera_rate"], 0),
                                    str(p["compressed_images"]), randomization, seed)
                        if (p["bundle"] or any(str(c) for c in p["cameras"])) else None)

        self._msg = JointState()
        self._msg.name = list(self.sim.joint_names)
        rnd = f", randomized {self.sim.randomization}" if self.sim.randomization else ""
        what = ("efforts" if self.spec.control_mode == "force"
                else "positions, kp, kd" if interface == "position_gains" else "positions")
        self.get_logger().info(
            f"simulating {self.spec.name} ({len(self.sim.joint_names)} joints, physics {1 / self.sim.timestep:.0f} Hz, "
            f"publishing {self.publish_rate:g} Hz on {ros.joint_states}"
            f"{', ' + ros.imu if self.imu_pub else ''}{', ~/ee_pose' if self.ee_pub else ''}"
            f"{', ' + ros.object_pose if self.object_pub else ''}"
            f"{'; ' + self.cameras.describe() if self.cameras else ''}); "
            f"commands ({interface}, {what}) on {ros.joint_commands}"
            f"{', gripper on ' + ros.gripper_commands if self.sim.has_gripper and ros.gripper_commands else ''}"
            f"; initial pose {self.sim.initial_pose!r}{rnd}")

    # ----- command callbacks (executor thread) -----
    def _queue(self, kind: str, value: Any) -> None:
        with self.lock:
            self.pending_commands.append((time.monotonic() + self.command_latency, kind, value))

    def _ignore(self, why: str) -> None:
        self.stats["ignored"] += 1
        self.get_logger().warning(f"ignoring command: {why}", throttle_duration_sec=1.0)

    def _on_command(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(self.sim.actuated_names)
        if values.size != n:
            return self._ignore(f"{self.spec.ros.joint_commands} has {values.size} values, expected {n} "
                                f"({', '.join(self.sim.actuated_names)})")
        if not np.all(np.isfinite(values)):
            return self._ignore("NaN or inf in the command")
        self._queue("targets", values)

    def _on_position_gains(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(self.sim.actuated_names)
        if values.size != 3 * n:
            return self._ignore(f"{self.spec.ros.joint_commands} has {values.size} values, expected {3 * n} "
                                f"(position_gains: {n} positions, {n} kp, {n} kd for "
                                f"{', '.join(self.sim.actuated_names)})")
        if not np.all(np.isfinite(values)):
            return self._ignore("NaN or inf in the command")
        q, kp, kd = values[:n], values[n:2 * n], values[2 * n:]
        if np.any(kp < 0) or np.any(kd < 0):
            bad = [f"{j} (kp {p:g}, kd {d:g})" for j, p, d in zip(self.sim.actuated_names, kp, kd) if p < 0 or d < 0]
            return self._ignore(f"negative gain(s): {', '.join(bad)}")
        self._queue("position_gains", (q, kp, kd))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        unknown = [j for j in names if j not in self.sim.actuated_names]
        if unknown or len(set(names)) != len(names):
            return self._ignore(f"trajectory joints {unknown or names} are not distinct actuated joints of "
                                f"{self.spec.name} ({self.sim.actuated_names})")
        times, positions = [], []
        for i, pt in enumerate(msg.points):
            if len(pt.positions) != len(names):
                return self._ignore(f"trajectory point {i} has {len(pt.positions)} positions for {len(names)} joints")
            times.append(pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9)
            positions.append(list(pt.positions))
        if positions and not np.all(np.isfinite(positions)):
            return self._ignore("NaN or inf in the trajectory")
        index = np.array([self.sim.actuated_names.index(j) for j in names], dtype=int)
        self._queue("trajectory", (index, np.array(times), np.array(positions).reshape(len(times), len(names))))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(self.spec.gripper.joints)
        if values.size not in (1, n) or not np.all(np.isfinite(values)):
            return self._ignore(f"{self.spec.ros.gripper_commands} needs 1 or {n} finite values "
                                f"(finger opening, m), got {list(values)}")
        self._queue("gripper", float(values.mean()))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            self.sim.reset()
            self.trajectory = None
            self.pending_commands.clear()
            self.outbox.clear()
            self._reset_clock = True
        self.get_logger().info(f"reset to the initial pose {self.sim.initial_pose!r}")
        response.success = True
        response.message = f"reset {self.spec.name} to initial pose {self.sim.initial_pose!r}"
        return response

    # ----- simulation thread -----
    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="sim", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the simulation thread (it finishes the tick in progress, publishes nothing
        more); True if it has ended within `timeout` s (or never ran)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _apply_due_commands(self, now: float) -> None:
        while self.pending_commands and self.pending_commands[0][0] <= now:
            _, kind, value = self.pending_commands.popleft()
            self.stats["commands"] += 1
            if not self.first_command_received and kind != "gripper":
                self.first_command_received = True
                self.get_logger().info("first command received")
            if kind == "targets":
                self.trajectory = None
                self.sim.set_targets(value)
            elif kind == "position_gains":
                self.trajectory = None
                q, kp, kd = value
                self.sim.set_targets(q, kp=kp, kd=kd)
            elif kind == "gripper":
                self.sim.set_gripper(value)
            else:
                index, times, positions = value
                self.trajectory = TrajectoryFollower(self.sim.targets, index, times, positions, self.sim.time)
        if self.trajectory is not None:
            self.sim.set_targets(self.trajectory.targets(self.sim.time))
            if self.trajectory.done(self.sim.time):
                self.trajectory = None

    def _run(self) -> None:
        period = 1.0 / self.publish_rate
        dt = self.sim.timestep
        if self.cameras is not None:
            self.cameras.start()  # renders in its own thread: the joint states keep their rate
        next_tick = time.monotonic()
        wall0 = sim0 = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                if self._reset_clock:
                    wall0, sim0, next_tick, self._reset_clock = now, self.sim.time, now, False
                self._apply_due_commands(now)
                target = sim0 + (now - wall0) * self.real_time_factor
                steps = int(np.floor((target - self.sim.time) / dt + 1e-9))
                max_steps = max(1, int(round(0.1 * self.real_time_factor / dt)))
                if steps > max_steps:  # more than 0.1 s behind: skip ahead instead of catching up
                    self.stats["skips"] += 1
                    self.get_logger().warning("simulation cannot keep up with the wall clock; skipping ahead",
                                              throttle_duration_sec=5.0)
                    steps = max_steps
                    wall0, sim0 = now, self.sim.time + steps * dt
                self.sim.step(steps)
                self._measure()
                frame = self.cameras.due(now) if self.cameras else None
            if frame is not None:
                self.cameras.submit(*frame)
            if self._stop.is_set():
                break
            self._flush_outbox(time.monotonic())
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -period:
                next_tick = time.monotonic()  # late by more than a period: do not burst
        if self.cameras is not None:
            self.cameras.close()

    def _measure(self) -> None:
        stamp = self.get_clock().now().to_msg()
        pos, vel, eff = self.sim.joint_state()
        if self.pos_noise:
            pos = pos + self.rng.normal(0.0, self.pos_noise, pos.shape)
        if self.vel_noise:
            vel = vel + self.rng.normal(0.0, self.vel_noise, vel.shape)
        js = JointState()
        js.header.stamp = stamp
        js.name = self._msg.name
        js.position, js.velocity, js.effort = _doubles(pos), _doubles(vel), _doubles(eff)
        out = [(self.joint_state_pub, js)]
        if self.imu_pub is not None:
            reading = self.sim.imu()
            q = reading.orientation_wxyz
            if self.quat_noise:
                axis = self.rng.normal(size=3)
                angle = self.rng.normal(0.0, self.quat_noise)
                half = 0.5 * angle
                q = _quat_mul(q, np.concatenate([[np.cos(half)], np.sin(half) * axis / np.linalg.norm(axis)]))
            gyro = reading.angular_velocity + (self.rng.normal(0, self.gyro_noise, 3) if self.gyro_noise else 0)
            acc = reading.linear_acceleration + (self.rng.normal(0, self.acc_noise, 3) if self.acc_noise else 0)
            imu = Imu()
            imu.header.stamp = stamp
            imu.header.frame_id = self.spec.sites.imu or "imu"
            imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z = (float(v) for v in q)
            imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = (float(v) for v in gyro)
            imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = (float(v) for v in acc)
            # covariance: diagonal variance of the injected noise (0 = known exactly)
            imu.orientation_covariance = _doubles(np.diag([self.quat_noise ** 2] * 3).ravel())
            imu.angular_velocity_covariance = _doubles(np.diag([self.gyro_noise ** 2] * 3).ravel())
            imu.linear_acceleration_covariance = _doubles(np.diag([self.acc_noise ** 2] * 3).ravel())
            out.append((self.imu_pub, imu))
        if self.ee_pub is not None:
            out.append((self.ee_pub, _pose_msg(stamp, *self.sim.ee_pose())))
        if self.object_pub is not None:
            out.append((self.object_pub, _pose_msg(stamp, *self.sim.object_pose())))
        release = time.monotonic() + self.latency
        for pub, msg in out:
            self.outbox.append((release, pub, msg))
        if self.base_pose_pub is not None:  # ground truth: now, not through the sensor latency
            pos, quat, lin, ang = self.sim.base_state()
            twist = TwistStamped()
            twist.header.stamp = stamp
            twist.header.frame_id = self.spec.sites.base_body or "base"
            twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(v) for v in lin)
            twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = (float(v) for v in ang)
            self.outbox.appendleft((0.0, self.base_twist_pub, twist))
            self.outbox.appendleft((0.0, self.base_pose_pub, _pose_msg(stamp, pos, quat)))

    def _flush_outbox(self, now: float) -> None:
        while not self._stop.is_set():
            with self.lock:
                if not self.outbox or self.outbox[0][0] > now:
                    return
                _, pub, msg = self.outbox.popleft()
            try:
                pub.publish(msg)
            except Exception:  # the context is shutting down
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    return
                raise
            if pub is self.joint_state_pub:
                self.stats["published"] += 1


def _pose_msg(stamp, position: np.ndarray, quat_wxyz: np.ndarray) -> PoseStamped:
    pose = PoseStamped()
    pose.header.stamp = stamp
    pose.header.frame_id = "world"
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in position)
    o = pose.pose.orientation
    o.w, o.x, o.y, o.z = (float(v) for v in quat_wxyz)
    return pose


def run(ros_args: list[str]) -> int:
    """Run the node with `ros_args` (as given after `--ros-args`); returns an exit code.

    SIGINT and SIGTERM only set a flag (`process.ros_until_signal`; rclpy's own signal
    handlers are not installed). The executor is spun in 50 ms slices that check it; then
    the simulation thread is stopped and joined (at most 1 s; it ends within one tick),
    the node destroyed and rclpy shut down, in that order, with the context valid
    throughout. (rclpy's default handlers, used before, shut the context down from their
    own thread under the running simulation thread and, for SIGINT, also raised
    KeyboardInterrupt wherever the main thread happened to be, rclpy's executor and this
    function's cleanup included.) Measured on a 2-core machine: 0.2-0.3 s from the signal
    to the process's exit, under 1 s with both cores busy; most of it is the DDS
    participant's teardown at interpreter exit."""
    from rclpy.executors import SingleThreadedExecutor

    with contextlib.ExitStack() as stack:
        try:
            stop = stack.enter_context(ros_until_signal("roboreal-sim-bridge", ros_args))
        except Exception as e:  # rcl's argument parser: e.g. `-p name` without `:=value`
            raise ConfigError("--ros-args", f"{' '.join(ros_args)}: {e}") from None
        node = SimBridge()
        try:
            node.start()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.05)
        finally:
            stopped = node.stop()
            elapsed = max(time.monotonic() - node.started_at, 1e-9) if node.started_at else 0.0
            s = node.stats
            print(f"[sim_bridge] shutting down: published {s['published']} joint states "
                  f"(~{s['published'] / max(elapsed, 1e-9):.0f} Hz over {elapsed:.1f} s), applied {s['commands']} "
                  f"commands, ignored {s['ignored']}, fell behind {s['skips']} times"
                  + (f"; camera frames: {node.cameras.published} published, {node.cameras.dropped} dropped"
                     if node.cameras is not None else "")
                  + ("" if stopped else "; the simulation thread did not stop within 1 s"), flush=True)
            node.destroy_node()
    return 0
