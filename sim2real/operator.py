"""A scripted operator for arm deployments: it watches the end effector reach for its goals
and, when the policy strays or gives up short of a goal, takes over through the joystick path
(``sensor_msgs/Joy`` on ``/joy`` -> the teleop node -> the policy node's intervention) exactly
as a person with a joystick would, so the recorder labels its steps as a human's.

What it sees is what a person beside the robot sees: the end effector's position (the sim
bridge's ``~/ee_pose``; on a real robot a motion-capture or camera estimate) and the joint
positions on the driver's joint-state topic. What it does is the scripted expert's step
(`roboreal.agents.experts.arm_ik_action`: damped least squares from the measured joint
positions, without velocity damping because measured joint velocities are the noisiest
reading a driver publishes), sent as normalized joint-target deltas on Joy axes 0..n-1.

The teleop node must map those axes to the action and not to goal motion; `teleop_params`
gives its parameters for this (used by ``./dev demo``).

Rule per goal (`OperatorRule`): the policy gets ``patience_s``; the operator steps in at
once when the error grows ``stray_m`` above the best the policy managed (it is moving away),
and at the end of the patience when the end effector is farther than ``success_radius``
from the goal. It hands back when within ``release_radius`` for ``settle_s`` or after
``max_takeover_s``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import mujoco
import numpy as np

from roboreal.agents.experts import ScriptedPandaConfig, arm_ik_action
from roboreal.robots.spec import RobotSpec


@dataclass
class OperatorRule:
    patience_s: float = 3.0  # the policy's time per goal before the operator judges it
    success_radius: float = 0.05  # m: the policy reached the goal (the panda-reach task's success radius)
    stray_m: float = 0.08  # m above the best error so far: the policy is moving away, take over at once
    release_radius: float = 0.02  # m: the operator has brought it close enough to hand back
    settle_s: float = 0.4  # s within release_radius before handing back
    max_takeover_s: float = 4.0
    # The operator's own IK step: a cautious person (half the scripted expert's gain)
    ik: ScriptedPandaConfig = field(default_factory=lambda: ScriptedPandaConfig(gain=0.3, velocity_damping=0.0))


def teleop_params(action_size: int, intervention_button: int = 4) -> dict:
    """Teleop node parameters for the operator's Joy stream: axes 0..n-1 are the action,
    no axis moves the goal (the goal comes from whoever sends goals)."""
    return {"action_axes": list(range(action_size)), "action_scale": 1.0, "axis_goal_x": -1, "axis_goal_y": -1,
            "axis_goal_z": -1, "intervention_button": intervention_button, "joy_timeout": 0.5}


class ArmKinematics:
    """The robot's MuJoCo model: measured joint positions -> the operator's IK action."""

    def __init__(self, spec: RobotSpec, action_scale: float | np.ndarray, cfg: ScriptedPandaConfig):
        from roboreal.robots.model import build_model

        self.model = build_model(spec)
        self.data = mujoco.MjData(self.model)
        self.cfg, self.scale = cfg, np.asarray(action_scale, dtype=np.float64)  # per joint or one
        self.site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, spec.sites.end_effector)
        jids = [mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, j.name) for j in spec.actuated_joints]
        self.qpos_idx = np.array([self.model.jnt_qposadr[j] for j in jids])
        self.dof_idx = np.array([self.model.jnt_dofadr[j] for j in jids])
        self.joint_names = [j.name for j in spec.actuated_joints]
        self.default = np.array([j.default for j in spec.actuated_joints], dtype=np.float64)
        self.jacp = np.zeros((3, self.model.nv))
        self.jacr = np.zeros((3, self.model.nv))

    def action(self, q: np.ndarray, ee: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The normalized action moving the end effector (seen at `ee`) towards `goal`."""
        d = self.data
        d.qpos[self.qpos_idx] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_jacSite(self.model, d, self.jacp, self.jacr, self.site)
        # the error from the observed end effector; the Jacobian from the measured joints
        return arm_ik_action(self.cfg, self.scale, self.jacp[:, self.dof_idx], self.jacr[:, self.dof_idx], ee,
                             d.site_xmat[self.site].reshape(3, 3), q, None, self.default, goal)


class ScriptedOperator:
    """The operator on an rclpy node (spun by its owner): reads joint states and the end
    effector, publishes Joy. `supervise(goal, seconds)` runs the rule for one goal."""

    def __init__(self, node, spec: RobotSpec, action_scale: float | np.ndarray, rule: OperatorRule | None = None,
                 ee_topic: str = "/sim_bridge/ee_pose", joy_topic: str = "/joy", intervention_button: int = 4):
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState, Joy

        self.rule = rule or OperatorRule()
        self.kin = ArmKinematics(spec, action_scale, self.rule.ik)
        self.Joy = Joy
        self.button = intervention_button
        self.n = len(self.kin.joint_names)
        self.q: np.ndarray | None = None
        self.ee: np.ndarray | None = None
        self._lock = threading.Lock()
        self.joy_pub = node.create_publisher(Joy, joy_topic, 10)
        node.create_subscription(JointState, spec.ros.joint_states, self._on_joints, qos_profile_sensor_data)
        node.create_subscription(PoseStamped, ee_topic, self._on_ee, qos_profile_sensor_data)

    def _on_joints(self, msg) -> None:
        pos = dict(zip(msg.name, msg.position))
        if all(n in pos for n in self.kin.joint_names):
            with self._lock:
                self.q = np.array([pos[n] for n in self.kin.joint_names])

    def _on_ee(self, msg) -> None:
        p = msg.pose.position
        with self._lock:
            self.ee = np.array([p.x, p.y, p.z])

    def error(self, goal: np.ndarray) -> float:
        with self._lock:
            return float(np.linalg.norm(self.ee - goal)) if self.ee is not None else float("inf")

    def _joy(self, axes: np.ndarray, press: bool = False) -> None:
        m = self.Joy()
        m.axes = [float(a) for a in axes]
        m.buttons = [0] * (self.button + 1)
        if press:
            m.buttons[self.button] = 1
        self.joy_pub.publish(m)

    def _toggle(self) -> None:
        """One press of the intervention button (a rising edge, then released)."""
        zero = np.zeros(self.n)
        self._joy(zero, press=True)
        time.sleep(0.05)
        self._joy(zero)

    def supervise(self, goal, send_goal, period_s: float = 0.04) -> dict:
        """One goal: the policy first, the operator if it strays or falls short. `send_goal()`
        keeps the goal stream alive (the policy node holds on a stale goal). Returns what
        happened: the policy's error when judged, whether and why it took over, for how long,
        and the final error."""
        r = self.rule
        goal = np.asarray(goal, dtype=np.float64)
        t0 = time.monotonic()
        best = float("inf")
        reason = None
        while time.monotonic() - t0 < r.patience_s:
            send_goal()
            err = self.error(goal)
            best = min(best, err)
            if np.isfinite(best) and err > best + r.stray_m:
                reason = "strayed"
                break
            time.sleep(period_s)
        policy_error = self.error(goal)
        policy_s = time.monotonic() - t0
        if reason is None and policy_error > r.success_radius:
            reason = "fell short"
        out = {"goal": goal.tolist(), "policy_error": policy_error, "policy_s": policy_s,
               "reached_by_policy": reason is None, "takeover": reason, "takeover_s": 0.0}
        if reason is None:
            out["final_error"] = policy_error
            return out
        self._toggle()
        t1 = time.monotonic()
        close_since = None
        while time.monotonic() - t1 < r.max_takeover_s:
            send_goal()
            with self._lock:
                q, ee = self.q, self.ee
            if q is not None and ee is not None:
                self._joy(self.kin.action(q, ee, goal))
                if np.linalg.norm(ee - goal) < r.release_radius:
                    close_since = close_since or time.monotonic()
                    if time.monotonic() - close_since >= r.settle_s:
                        break
                else:
                    close_since = None
            time.sleep(period_s)
        self._toggle()  # hand back
        out["takeover_s"] = time.monotonic() - t1
        out["final_error"] = self.error(goal)
        return out
