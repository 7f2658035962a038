"""What teleop does with a human's input, without ROS: sticks or keys -> velocity commands,
a goal nudged inside the workspace box, the intervention state and a normalized action
(`TeleopLogic`, configured from the node's parameters by `teleop_config`). The node that
publishes it is `roboreal.sim2real.nodes.teleop`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from roboreal.robots.spec import RobotSpec

def default_goal(spec: RobotSpec) -> np.ndarray:
    """The end-effector position at the default pose (MuJoCo FK on the robot's model)."""
    import mujoco

    from roboreal.robots.model import build_model

    model = build_model(spec)
    data = mujoco.MjData(model)
    for j in spec.joints:
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        data.qpos[model.jnt_qposadr[jid]] = j.default
    mujoco.mj_kinematics(model, data)
    return data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, spec.sites.end_effector)].copy()


@dataclass
class TeleopConfig:
    action_size: int
    axis_v: tuple[int, int, int] = (1, 0, 3)
    max_v: tuple[float, float, float] = (1.0, 0.5, 1.0)
    axis_goal: tuple[int, int, int] = (1, 0, 4)
    goal_speed: float = 0.1
    goal_min: np.ndarray | None = None
    goal_max: np.ndarray | None = None
    intervention_button: int = 4
    estop_button: int = -1
    action_axes: tuple[int, ...] = ()
    action_scale: float = 1.0
    joy_timeout: float = 0.5
    key_velocity_step: float = 0.1
    key_goal_step: float = 0.01
    key_action_step: float = 0.1


@dataclass
class TeleopLogic:
    """What the human asks for, from Joy messages and key presses (no ROS; unit-testable)."""

    cfg: TeleopConfig
    command_inputs: tuple[str, ...]  # what the human drives: "cmd_vel" and/or "goal" (RobotSpec.command_inputs)
    goal: np.ndarray | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    intervening: bool = False
    action: np.ndarray | None = None
    selected: int = 0
    estop_requests: int = 0
    joy_axes: np.ndarray | None = None
    joy_time: float | None = None
    _buttons: tuple[int, ...] = ()
    _keyboard_action: bool = False

    def __post_init__(self):
        self.action = np.zeros(self.cfg.action_size)

    @staticmethod
    def _axis(axes: np.ndarray, i: int) -> float:
        return float(axes[i]) if 0 <= i < len(axes) and math.isfinite(axes[i]) else 0.0

    def joy(self, axes: Sequence[float], buttons: Sequence[int], now: float) -> list[str]:
        """A Joy message; returns events ("intervention on/off", "estop")."""
        axes = np.asarray(axes, dtype=np.float64)
        buttons = tuple(int(b) for b in buttons)
        events = []

        def pressed(i: int) -> bool:  # rising edge
            was = self._buttons[i] if 0 <= i < len(self._buttons) else 0
            return 0 <= i < len(buttons) and buttons[i] and not was

        if pressed(self.cfg.intervention_button):
            self.intervening = not self.intervening
            events.append(f"intervention {'on' if self.intervening else 'off'}")
        if pressed(self.cfg.estop_button):
            self.estop_requests += 1
            events.append("estop")
        self._buttons = buttons
        self.joy_axes, self.joy_time = axes, now
        c = self.cfg
        self.velocity = np.array([self._axis(axes, a) * m for a, m in zip(c.axis_v, c.max_v)])
        self.action = np.clip(np.array([self._axis(axes, c.action_axes[k]) * c.action_scale
                                        if k < len(c.action_axes) else 0.0 for k in range(c.action_size)]), -1, 1)
        return events

    def joy_fresh(self, now: float) -> bool:
        return self.joy_time is not None and now - self.joy_time <= self.cfg.joy_timeout

    def key(self, ch: str) -> list[str]:
        """A key press; returns events."""
        c, events = self.cfg, []
        steps = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1)}
        if "cmd_vel" in self.command_inputs:
            steps.update({"q": (2, 1), "e": (2, -1)})
            if ch in steps:
                i, sign = steps[ch]
                lim = c.max_v[i]
                self.velocity[i] = float(np.clip(self.velocity[i] + sign * c.key_velocity_step, -lim, lim))
            elif ch == " ":
                self.velocity[:] = 0.0
        elif "goal" in self.command_inputs and self.goal is not None:
            steps.update({"r": (2, 1), "f": (2, -1)})
            if ch in steps:
                i, sign = steps[ch]
                g = self.goal.copy()
                g[i] += sign * c.key_goal_step
                self.set_goal(g)
        if ch == "i":
            self.intervening = not self.intervening
            events.append(f"intervention {'on' if self.intervening else 'off'}")
        elif ch == "x":
            self.estop_requests += 1
            events.append("estop")
        elif ch in "[]" and c.action_size:
            self.selected = (self.selected + (1 if ch == "]" else -1)) % c.action_size
            events.append(f"action dim {self.selected}")
        elif ch in "kl" and c.action_size:
            self._keyboard_action = True
            self.action[self.selected] = float(np.clip(self.action[self.selected] +
                                                       (c.key_action_step if ch == "l" else -c.key_action_step), -1, 1))
        elif ch == "z":
            self.action[:] = 0.0
        return events

    def set_goal(self, goal: Sequence[float]) -> None:
        g = np.asarray(goal, dtype=np.float64).reshape(3)
        if self.cfg.goal_min is not None:
            g = np.clip(g, self.cfg.goal_min, self.cfg.goal_max)
        self.goal = g

    def tick(self, dt: float, now: float, keyboard: bool) -> None:
        """Advance by dt: goal motion from the sticks; released sticks stop everything."""
        if keyboard:
            return
        if not self.joy_fresh(now):
            self.velocity = np.zeros(3)
            return
        if "goal" in self.command_inputs and self.goal is not None:
            c = self.cfg
            d = np.array([self._axis(self.joy_axes, a) for a in c.axis_goal]) * c.goal_speed * dt
            self.set_goal(self.goal + d)

    def teleop_action(self, now: float, keyboard: bool) -> np.ndarray | None:
        """The action to publish now (None: nothing, e.g. sticks released, not intervening)."""
        if not self.intervening:
            return None
        if keyboard:
            return self.action.copy()
        return self.action.copy() if self.joy_fresh(now) else None


def teleop_config(spec: RobotSpec, p: dict) -> TeleopConfig:
    """The logic's settings from the node's parameter values `p` (names as in teleop's `PARAMETERS`)."""
    size = int(p["action_size"]) or len(spec.actuated_joints)
    lo = hi = None
    if spec.safety.workspace_min is not None:
        lo, hi = np.array(spec.safety.workspace_min), np.array(spec.safety.workspace_max)
    return TeleopConfig(
        action_size=size, axis_v=(int(p["axis_vx"]), int(p["axis_vy"]), int(p["axis_wz"])),
        max_v=(float(p["max_vx"]), float(p["max_vy"]), float(p["max_wz"])),
        axis_goal=(int(p["axis_goal_x"]), int(p["axis_goal_y"]), int(p["axis_goal_z"])),
        goal_speed=float(p["goal_speed"]), goal_min=lo, goal_max=hi,
        intervention_button=int(p["intervention_button"]), estop_button=int(p["estop_button"]),
        action_axes=tuple(int(a) for a in p["action_axes"]), action_scale=float(p["action_scale"]),
        joy_timeout=float(p["joy_timeout"]), key_velocity_step=float(p["key_velocity_step"]),
        key_goal_step=float(p["key_goal_step"]), key_action_step=float(p["key_action_step"]))
