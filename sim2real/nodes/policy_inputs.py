"""What reaches the policy node from outside: the sensor, camera, command, teleop and e-stop
subscriptions, and the ``~/reset`` / ``~/release_estop`` services (`PolicyNodeInputs`); the
cameras' supervision (missing, refused, stale images).

Every callback is counted (`PolicyNodeInputs._counted`): the control loop (`policy_loop.py`)
sees from that count that nothing more is waiting. Stamped readings are aged on the node's
clock (`timing.StampTracker`); a refused message is counted, with its reason, for the
diagnostics (`policy_status.py`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from sensor_msgs.msg import CompressedImage, Image, Imu, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from roboreal.sim2real.nodes import images


def _stamp(msg_stamp) -> float:
    return msg_stamp.sec + msg_stamp.nanosec * 1e-9


class PolicyNodeInputs:
    """The policy node's subscription and service callbacks (a part of `PolicyNode`, which
    sets the attributes used here: builder, chain, controller, schedule, stamps, settings,
    the teleop / intervention state and the drop counters)."""

    def _counted(self, callback: Callable) -> Callable:
        """`callback`, counted in `self.callbacks` (how `spin` sees that nothing is waiting)."""
        def run(*args):
            self.callbacks += 1
            return callback(*args)
        return run

    def _subscribe(self, msg_type: Any, topic: str, callback: Callable, qos: Any) -> Any:
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
        frames = self.settings.goal_frames
        if msg.header.frame_id not in frames:
            self._drop(what, f"frame_id {msg.header.frame_id!r} is not one of {sorted(frames)} "
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

    def _on_image(self, cam: images.CameraInput, msg: Image | CompressedImage) -> None:
        """A camera's colour image: decoded to RGB, checked against the manifest's size (or
        resized, with the resize parameter), kept as the policy's next input. A message that
        is not a usable image is refused, counted and named (`PolicyNode._supervise_cameras`
        then latches the fault mode); it never raises."""
        what = f"camera {cam.name}"
        measured = self._measured_at(what, msg.header)
        if measured is None:
            return
        try:
            if isinstance(msg, CompressedImage):
                rgb = images.rgb_from_compressed(msg)
            else:
                rgb = images.to_rgb(images.image_from_msg(msg), str(msg.encoding))
            cam.accept_rgb(rgb, measured)
        except (images.ImageError, ValueError) as e:  # ValueError: a shape numpy/OpenCV could not take
            cam.refuse(str(e))
            self._drop(what, str(e))

    def _on_depth(self, cam: images.CameraInput, msg: Image) -> None:
        """A depth camera's depth image (16UC1 mm / 32FC1 m): the policy's 4th channel."""
        what = f"camera {cam.name} depth"
        measured = self._measured_at(what, msg.header)
        if measured is None:
            return
        try:
            cam.accept_depth(images.depth_from_msg(msg, cam.depth_range), measured)
        except (images.ImageError, ValueError) as e:
            cam.refuse(str(e))
            self._drop(what, str(e))

    def _describe_cameras(self) -> str:
        if not self.cameras:
            return ""
        cams = ", ".join(f"{c.name} {c.width}x{c.height} on {self.image_topics[c.name]}" for c in self.cameras)
        return (f"; cameras {cams}"
                f" ({self.settings.image_transport}{', resized' if self.settings.resize else ''}, "
                f"timeout {self.settings.image_timeout:g} s)")

    def _cameras_waiting(self, now: float | None = None) -> list[str]:
        """Why the cameras keep the node from starting: missing, refused or stale images."""
        now = time.monotonic() if now is None else now
        out = []
        for c in self.cameras:
            why = c.waiting()
            if why is None and c.age(now) > self.settings.image_timeout:
                why = (f"camera {c.name}'s image is {c.age(now):.2f} s old "
                       f"(image_timeout {self.settings.image_timeout:g} s)")
            if why:
                out.append(why)
        return out

    def _supervise_cameras(self, now: float) -> None:
        """Once running: a refused image latches the chain's plausibility fault, a stale camera
        its watchdog (the fault mode of stale joint states); ~/reset clears them."""
        timeout = self.settings.image_timeout
        for c in self.cameras:
            if c.refused:
                self.chain.filter("plausibility").latch(f"camera {c.name}: {c.refused}")
            elif c.age(now) > timeout:
                age = c.age(now)
                old = "never received" if math.isinf(age) else f"{age:.3f} s old"
                self.chain.filter("watchdog").latch(f"stale camera {c.name} ({old}; image_timeout {timeout:g} s) "
                                                    f"at t={now}")

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

    # ------------------------------------------------------------------ services
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
