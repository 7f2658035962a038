"""Teleop (`roboreal teleop --robot NAME|PATH [--keyboard]`): a human drives the policy's inputs,
or takes over from the policy.

Input: ``sensor_msgs/Joy`` on ``joy_topic`` (a joystick driver such as ``joy_node``), or
the keyboard (``keyboard: true``; stdin must be a terminal).

Output, every 1/``rate`` s (streamed, so the policy node's command watchdog stays fed;
stop this node and the robot holds):
  * robots that take velocity commands (robot.yaml ros.cmd_vel: quadrupeds):
    ``geometry_msgs/Twist`` on ``cmd_vel_topic``:
    linear.x, linear.y, angular.z from the sticks (``axis_vx/vy/wz`` x ``max_vx/vy/wz``)
  * robots that take goals (robot.yaml ros.goal: manipulators): ``geometry_msgs/PoseStamped`` on ``goal_topic``,
    frame ``goal_frame_id``: the current goal nudged by the sticks at ``goal_speed`` m/s,
    kept inside the spec's workspace box. It starts at ``initial_goal`` (default: the
    end-effector at the default pose, MuJoCo FK) and adopts goals others publish there.
  * ``std_msgs/Bool`` on ``intervention_topic``: the intervention state (toggled by
    ``intervention_button`` or the key ``i``)
  * while intervening: the human's normalized action, ``std_msgs/Float64MultiArray`` on
    ``teleop_action_topic``: action[k] = axes[action_axes[k]] * action_scale (-1: 0.0), or
    nudged per dimension from the keyboard. The policy node executes it through the SAME
    safety chain as the policy's action.
  * e-stop: ``estop_button`` / the key ``x`` publish true on ``estop_topic`` (latched in the
    policy node until its ``~/release_estop`` service; its ``~/reset`` does not release it).

A Joy stream silent for ``joy_timeout`` s counts as released sticks: zero velocity, no
goal motion, and no teleop action (the policy node then holds while intervening).

Stopping (SIGINT/SIGTERM; measured 0.4-0.8 s from the signal to the process's exit, the
limit is 2 s). Its last words are published once, reliably; it then waits up to 0.2 s for
the subscribers' acknowledgements (the data itself arrives at once on loopback; Fast DDS's
acknowledgements can take half a second, so this is a bounded wait, not a guarantee):
  * quadrupeds: a zero ``Twist`` on ``cmd_vel_topic``: the policy is asked to stand still,
    and when the stream it stands on goes stale the policy node's command watchdog makes
    the robot hold its standing pose (``safety.watchdog.command``);
  * manipulators: no goal at all (the goal stream just stops): a last goal would be a new
    target nobody is watching; the policy node keeps the last goal until its command
    watchdog makes the arm hold;
  * ``false`` on ``intervention_topic``: no human is driving any more. Leaving the policy
    node in intervention would hold the robot on a dead teleop stream indefinitely and
    mark every recorded step as an intervention without a label; with ``false`` the policy
    node's own watchdogs decide (hold on the stale cmd_vel / goal above), which is where
    that decision belongs. No teleop action and no e-stop (``false`` releases nothing).
A Ctrl-C therefore never leaves the robot walking or reaching on the human's last command.

Parameters: `PARAMETERS`, plus ``robot`` (a robot name, or a path to a robot.yaml or its
folder) and, optionally, ``bundle`` (the policy's bundle: ``action_size`` and, for velocity
commands, ``max_vx/vy/wz`` then follow its manifest: its action size and the velocity ranges
it was trained on). Defaults: this file, then the robot kind's ``config/teleop_<kind>.yaml``,
then the bundle's manifest (`roboreal.sim2real.nodes.params`), then params files / -p.

Keys: w/s a/d q/e  vx, vy, yaw rate (cmd_vel) | w/s a/d r/f  goal x, y, z (goal)
      space  zero the velocity  |  i  toggle intervention  |  [ ]  select action dim
      k/l  action dim -/+  |  z  zero the action  |  x  e-stop  |  h  help

What the sticks and keys do, without ROS: `roboreal.sim2real.nodes.teleop_logic`.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float64MultiArray

from roboreal.config import ConfigError
from roboreal.robots.spec import load_robot
from roboreal.sim2real.nodes.params import default_parameters, read_manifest
from roboreal.sim2real.nodes.teleop_logic import TeleopLogic, default_goal, teleop_config

NODE_NAME = "teleop"

PARAMETERS: dict[str, tuple[Any, str]] = {
    "keyboard": (False, "read the keyboard instead of /joy"),
    "rate": (20.0, "Hz of published commands"),
    "joy_topic": ("/joy", "sensor_msgs/Joy input"),
    "joy_timeout": (0.5, "s without Joy before the sticks count as released"),
    "cmd_vel_topic": ("", "geometry_msgs/Twist output (default: spec ros.cmd_vel)"),
    "goal_topic": ("", "geometry_msgs/PoseStamped output (default: spec ros.goal)"),
    "goal_frame_id": ("world", "frame_id of published goals (the robot base frame)"),
    "intervention_topic": ("/intervention", "std_msgs/Bool output"),
    "teleop_action_topic": ("/teleop/action", "std_msgs/Float64MultiArray output"),
    "estop_topic": ("/policy_node/estop", "std_msgs/Bool output (true = e-stop)"),
    "action_size": (0, "size of the policy's action (0: the robot's actuated joints)"),
    "axis_vx": (1, "Joy axis of linear.x"), "axis_vy": (0, "Joy axis of linear.y"),
    "axis_wz": (3, "Joy axis of angular.z"),
    "max_vx": (1.0, "m/s at full stick"), "max_vy": (0.5, "m/s at full stick"), "max_wz": (1.0, "rad/s at full stick"),
    "axis_goal_x": (1, "Joy axis moving the goal along x"), "axis_goal_y": (0, "... along y"),
    "axis_goal_z": (4, "... along z"),
    "goal_speed": (0.1, "m/s of goal motion at full stick"),
    "initial_goal": ([math.nan] * 3, "first goal (NaN: the end-effector at the default pose)"),
    "intervention_button": (4, "Joy button toggling the intervention (-1: none)"),
    "estop_button": (-1, "Joy button sending the e-stop (-1: none)"),
    "action_axes": ([-1], "Joy axis per action dimension (-1 or missing: 0.0)"),
    "action_scale": (1.0, "action per unit of stick"),
    "key_velocity_step": (0.1, "velocity change per key press"),
    "key_goal_step": (0.01, "m of goal motion per key press"),
    "key_action_step": (0.1, "action change per key press"),
}


class Teleop(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        dyn = dict(dynamic_typing=True)
        robot = str(self.declare_parameter("robot", "", ParameterDescriptor(
            description="a robot name, or a path to a robot.yaml or its folder", **dyn)).value or "")
        if not robot:
            raise ConfigError("robot", "not set: pass --robot NAME|PATH or --ros-args -p robot:=NAME|PATH")
        bundle = str(self.declare_parameter("bundle", "", ParameterDescriptor(
            description="the policy's bundle directory (optional): action_size and max_vx/vy/wz follow its "
                        "manifest", **dyn)).value or "")
        self.spec = spec = load_robot(robot)
        defaults = default_parameters(NODE_NAME, spec, manifest=read_manifest(bundle) if bundle else None,
                                      known={"robot", "bundle", *PARAMETERS})
        p = {k: self.declare_parameter(k, defaults.get(k, d), ParameterDescriptor(description=desc, **dyn)).value
             for k, (d, desc) in PARAMETERS.items()}
        self.keyboard = str(p["keyboard"]).lower() == "true"
        self.rate = float(p["rate"])
        if not self.rate > 0:
            raise ConfigError("rate", f"must be positive, got {self.rate}")
        self.logic = TeleopLogic(teleop_config(spec, p), spec.command_inputs)
        self.goal_frame = str(p["goal_frame_id"])
        qos = QoSProfile(depth=10)
        self.twist_pub = self.goal_pub = None
        cmd_topic = str(p["cmd_vel_topic"] or spec.ros.cmd_vel or "")
        goal_topic = str(p["goal_topic"] or spec.ros.goal or "")
        if "cmd_vel" in spec.command_inputs and cmd_topic:
            self.twist_pub = self.create_publisher(Twist, cmd_topic, qos)
        if "goal" in spec.command_inputs and goal_topic:
            g = np.array([float(v) for v in p["initial_goal"]])
            self.logic.set_goal(default_goal(spec) if not np.isfinite(g).all() else g)
            self.goal_pub = self.create_publisher(PoseStamped, goal_topic, qos)
            self._sent: list[np.ndarray] = []
            self.create_subscription(PoseStamped, goal_topic, self._on_goal, qos)
        self.intervention_pub = self.create_publisher(Bool, str(p["intervention_topic"]), qos)
        self.action_pub = self.create_publisher(Float64MultiArray, str(p["teleop_action_topic"]), qos)
        self.estop_pub = self.create_publisher(Bool, str(p["estop_topic"]), qos)
        self._estops_sent = 0
        # Set when the process is stopping: from then on only `publish_last_words` speaks
        # (run() hands in its signal flag, so a tick or a Joy message handled between the
        # signal and the end of the loop publishes nothing).
        self.stopping = threading.Event()
        if not self.keyboard:
            self.create_subscription(Joy, str(p["joy_topic"]), self._on_joy, qos)
        self.create_timer(1.0 / self.rate, self._tick)
        outputs = [t for t, pub in ((cmd_topic, self.twist_pub), (goal_topic, self.goal_pub)) if pub]
        self.get_logger().info(
            f"teleop for {spec.name}: {'keyboard' if self.keyboard else p['joy_topic']} -> {outputs}, "
            f"{p['intervention_topic']}, {p['teleop_action_topic']} ({self.logic.cfg.action_size} dims)")

    def _on_joy(self, msg) -> None:
        for ev in self.logic.joy(msg.axes, msg.buttons, time.monotonic()):
            self.get_logger().info(ev)
        self._publish_events()

    def on_key(self, ch: str) -> None:  # called from the keyboard thread through the executor
        for ev in self.logic.key(ch):
            self.get_logger().info(ev)
        if ch == "h":
            print(__doc__.split("Keys:")[1], file=sys.stderr)
        self._publish_events()

    def _on_goal(self, msg) -> None:
        g = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if not np.isfinite(g).all() or any(np.allclose(g, s, atol=1e-9) for s in self._sent):
            return  # our own goal coming back
        self.logic.set_goal(g)  # someone else set a goal: nudge from there

    def _publish_events(self) -> None:
        if self.stopping.is_set():
            return
        while self._estops_sent < self.logic.estop_requests:
            self.estop_pub.publish(Bool(data=True))
            self._estops_sent += 1
            self.get_logger().error("E-STOP sent")
        self.intervention_pub.publish(Bool(data=self.logic.intervening))

    def publish_last_words(self, timeout: float = 0.2) -> list[str]:
        """On shutdown: zero velocity (quadrupeds), intervention false, no new goal;
        waits (at most `timeout` s) for every subscriber's acknowledgement."""
        from rclpy.duration import Duration

        sent = []
        self.logic.velocity = np.zeros(3)
        self.logic.intervening = False
        if self.twist_pub is not None:
            self.twist_pub.publish(Twist())
            sent.append((self.twist_pub, "zero velocity"))
        self.intervention_pub.publish(Bool(data=False))
        sent.append((self.intervention_pub, "intervention false"))
        end = time.monotonic() + timeout
        for pub, _ in sent:
            left = max(end - time.monotonic(), 0.0)
            pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        return [what for _, what in sent]

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        now = time.monotonic()
        lg = self.logic
        lg.tick(1.0 / self.rate, now, self.keyboard)
        if self.twist_pub is not None:
            t = Twist()
            t.linear.x, t.linear.y, t.angular.z = (float(v) for v in lg.velocity)
            self.twist_pub.publish(t)
        if self.goal_pub is not None and lg.goal is not None:
            msg = PoseStamped()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self.goal_frame
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in lg.goal)
            msg.pose.orientation.w = 1.0
            self._sent = (self._sent + [lg.goal.copy()])[-50:]
            self.goal_pub.publish(msg)
        self.intervention_pub.publish(Bool(data=lg.intervening))
        a = lg.teleop_action(now, self.keyboard)
        if a is not None:
            self.action_pub.publish(Float64MultiArray(data=[float(v) for v in a]))


def _keyboard_loop(keys: list, lock: threading.Lock, stop: threading.Event) -> None:
    import select
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while not stop.is_set():
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                ch = os.read(fd, 1).decode(errors="ignore")
                with lock:
                    keys.append(ch)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run(ros_args: list[str]) -> int:
    """Run teleop with `ros_args` (as after ``--ros-args``); returns an exit code.

    SIGINT/SIGTERM set a flag (`process.ros_until_signal`, rclpy's handlers not installed),
    checked every 20 ms; then the last words (see the module docstring) go out while the
    context is still valid, and the node exits."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from roboreal.sim2real.nodes.process import ros_until_signal

    with ros_until_signal("roboreal-teleop", ros_args) as stop:
        try:
            node = Teleop()
        except ConfigError as e:
            print(f"[teleop] error: {e}", file=sys.stderr, flush=True)
            return 2
        node.stopping = stop
        keys: list[str] = []
        lock = threading.Lock()
        keyboard_stop = threading.Event()
        keyboard = None
        try:
            if node.keyboard:
                if not sys.stdin.isatty():
                    print("[teleop] error: keyboard: stdin is not a terminal", file=sys.stderr, flush=True)
                    return 2
                keyboard = threading.Thread(target=_keyboard_loop, args=(keys, lock, keyboard_stop), daemon=True)
                keyboard.start()
                print(__doc__.split("Keys:")[1], file=sys.stderr)
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.02)
                with lock:
                    pending, keys[:] = list(keys), []
                for ch in pending:
                    node.on_key(ch)
            if rclpy.ok():
                said = node.publish_last_words()
                print(f"[teleop] stopped: published {', '.join(said)}", flush=True)
        finally:
            keyboard_stop.set()
            if keyboard is not None:
                keyboard.join(0.5)  # it restores the terminal
            node.destroy_node()
    return 0
