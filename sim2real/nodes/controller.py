"""The deployment control step, without ROS: observation -> policy -> safety chain -> command.

`PolicyController` is what runs on the robot: the policy node (`policy_node.py`) feeds it
the robot's messages and publishes what it returns; `roboreal sim2sim` feeds it readings
from a simulated driver (latency, jitter, drops, noise) and applies what it returns to the
simulated actuators. One code path, so sim2sim tests the code that runs on the robot.

    ctl = PolicyController(bundle, spec, limits, gains="fixed")
    ctl.builder.set_joint_state(...); ctl.builder.set_imu(...); ctl.set_cmd_vel(vx, vy, wz, t)
    if ctl.started or ctl.start(now):
        out = ctl.step(now)        # out.cmd: the SafetyCommand to send; out.gripper: opening or None
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from roboreal.config import ConfigError
from roboreal.robots.spec import RobotSpec
from roboreal.policy_bundle import BundlePolicy
from roboreal.sim2real.nodes.observation import ObservationBuilder, applied_action
from roboreal.sim2real.safety import SafetyChain, SafetyLimits
from roboreal.sim2real.safety.types import SafetyCommand

_FLOAT32_SAFE = 1e30  # an observation beyond this is not fed to a float32 model
LAST_ACTION_SOURCES = ("commanded", "applied", "executed")


@dataclass
class ControlStep:
    """What one control step decided."""

    cmd: SafetyCommand  # the command to send (always passed the safety chain)
    obs: np.ndarray | None  # the observation the policy saw (None: not run)
    policy_action: np.ndarray  # the policy's action (zeros when it was not run)
    action: np.ndarray  # the action fed to the chain (the policy's, or a human's)
    applied: np.ndarray  # the chain's output mapped back to a normalized action
    pending: str | None  # why the policy was not run (the chain holds), or None
    gripper: float | None  # gripper opening to send, or None (keep the last one)
    human: bool  # a human's fresh action drove this step
    inference_s: float  # time spent building the observation and running the policy


def command_ranges(manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the velocity command the policy was trained on (manifest
    ``inputs.command.ranges``); unbounded for bundles that do not record them."""
    ranges = ((manifest.get("inputs") or {}).get("command") or {}).get("ranges")
    if not ranges:
        return np.full(3, -math.inf), np.full(3, math.inf)
    return np.asarray(ranges["min"], dtype=np.float64), np.asarray(ranges["max"], dtype=np.float64)


class PolicyController:
    """A bundle behind its safety chain, fed with robot readings (see the module docstring)."""

    def __init__(self, bundle: BundlePolicy, spec: RobotSpec, limits: SafetyLimits | None = None,
                 gains: str | None = None, last_action_source: str = "executed", object_timeout: float | None = None,
                 cmd_min: np.ndarray | None = None, cmd_max: np.ndarray | None = None):
        m = bundle.manifest
        self.bundle, self.spec, self.manifest = bundle, spec, m
        self.dt = float(m["control"]["dt"])
        self.mapping = bundle.action_mapping
        self.limits = limits if limits is not None else SafetyLimits.from_spec(spec)
        self.chain = SafetyChain(spec, self.mapping, self.dt, self.limits, gains=gains)
        self.builder = ObservationBuilder(m, spec)
        self.action_size = bundle.action_size if not bundle.discrete else self.mapping.size
        self.extra = list(m["action"].get("extra") or [])
        self.has_gripper_action = "gripper" in self.extra and spec.gripper is not None
        if last_action_source not in LAST_ACTION_SOURCES:
            raise ConfigError("last_action_source", f"expected one of {', '.join(LAST_ACTION_SOURCES)}, "
                                                    f"got {last_action_source!r}")
        self.last_action_source = last_action_source
        self.object_timeout = self.limits.watchdog.command if object_timeout is None else float(object_timeout)
        trained_min, trained_max = command_ranges(m)
        # A deployment may narrow the command range the policy is fed, never widen it beyond training.
        self.cmd_min = trained_min if cmd_min is None else np.maximum(np.asarray(cmd_min, dtype=np.float64), trained_min)
        self.cmd_max = trained_max if cmd_max is None else np.minimum(np.asarray(cmd_max, dtype=np.float64), trained_max)
        self._uses_last_action = any(t.source == "policy.last_action" for t in self.builder.terms)
        self._mapped = [self.chain.joint_names.index(j) for j in self.mapping.joints]
        self.started = False  # the first complete, plausible state was seen and the chain reset
        self.waiting_for: list[str] = []  # why nothing is commanded yet
        self.last_cmd: SafetyCommand | None = None

    # ------------------------------------------------------------------ inputs
    def set_cmd_vel(self, vx: float, vy: float, wz: float, arrival: float) -> np.ndarray:
        """A velocity command, clipped to the range the policy was trained on; returns it."""
        v = np.clip(np.array([vx, vy, wz], dtype=np.float64), self.cmd_min, self.cmd_max)
        self.builder.set_cmd_vel(*v, arrival=arrival)
        return v

    def policy_inputs_pending(self, now: float) -> str | None:
        """Why the policy cannot run yet (its goal or object pose is missing or stale)."""
        b = self.builder
        if b.needs_goal and b.goal_time is None:
            return "no goal yet"
        if b.needs_object and (b.object_time is None or now - b.object_time > self.object_timeout):
            return "no object pose" if b.object_time is None else "stale object pose"
        return None

    # ------------------------------------------------------------------ control
    def start(self, now: float) -> bool:
        """Begin (the startup ramp) once every reading is there and plausible; else record why not."""
        b = self.builder
        self.waiting_for = b.missing() or self.chain.check_state(b.robot_state(), now)
        if self.waiting_for:
            return False
        self.chain.reset(b.robot_state(), now)
        b.restart_history()
        self.started = True
        return True

    def reset(self, now: float | None) -> None:
        """Clear latched faults and restart the ramp from the last command (not the e-stop)."""
        state = self.builder.robot_state() if self.builder.ready else None
        self.chain.reset(state, now if state is not None else None)
        self.builder.set_last_action(None)
        self.builder.restart_history()

    def step(self, now: float, human: tuple[np.ndarray, float | None] | None = None) -> ControlStep:
        """One control step at `now` (the clock the readings' times are on). `human`: a
        teleoperator's (action, time) that replaces the policy's action (time None: stale,
        the chain holds)."""
        if not self.started:
            raise RuntimeError("PolicyController.step before start(): the robot state is not complete")
        b = self.builder
        pending = self.policy_inputs_pending(now)
        t0 = time.perf_counter()
        obs = None
        if pending is None and self.chain.faults:
            pending = f"latched fault {sorted(self.chain.faults)}"  # nothing the policy says is used
        if pending is None:
            obs = b.build()
            if not np.all(np.abs(obs) < _FLOAT32_SAFE):  # NaN, inf, or beyond what float32 holds
                pending = "observation not finite or out of float32 range"
        if pending is None:
            try:
                policy_action = np.asarray(self.bundle.normalized_action(obs), dtype=np.float64).ravel()
            except Exception:  # a broken model must not kill the loop: NaN latches the chain's fault mode
                policy_action = np.full(self.action_size, np.nan)
        else:
            policy_action = np.zeros(self.action_size)  # not run; the chain holds (command_stamp None)
        inference = time.perf_counter() - t0

        state = b.robot_state()
        if not b.command_inputs:
            # A policy that reads no command (cmd_vel / goal; a reach that sees its goal in its
            # images) has nothing to go stale: what it decides now is the command. The chain's
            # command watchdog stays armed for the robot's declared topics, so a pending input
            # and a stale human action below still hold it.
            state.command_stamp = now
        if pending is not None:
            state.command_stamp = None  # the chain holds until the policy's inputs are there
        action, is_human = policy_action, False
        if human is not None:
            action, state.command_stamp = human
            is_human = state.command_stamp is not None
        prev = self.last_cmd
        cmd = self.chain.step(action[:self.mapping.size], state, now)
        gripper = None
        if self.has_gripper_action and cmd.mode == "policy" and len(action) > self.mapping.size:
            gripper = self.chain.gripper(action[self.mapping.size], now)  # None: keep the last command
        # policy.last_action, as the sim's `actions`: what drove the robot this step
        applied = applied_action(self.mapping, cmd.values[self._mapped],
                                 None if prev is None else prev.values[self._mapped], action)
        last = action
        if self.last_action_source == "applied" or (self.last_action_source == "executed" and cmd.mode != "policy"):
            last = applied
        if self._uses_last_action:
            b.set_last_action(last)
        self.last_cmd = cmd
        return ControlStep(cmd, obs, policy_action, action, applied, pending, gripper, is_human, inference)
