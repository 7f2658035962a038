"""The safety chain: what stands between a learned policy and a real robot.

Pure numpy (MuJoCo only for a manipulator's workspace check), no ROS import. Nothing
leaves a policy node that has not passed `SafetyChain.step`::

    from roboreal.sim2real.safety import SafetyChain, RobotState, SafetyLimits

    limits = SafetyLimits.from_spec(spec).tighten(velocity_scale=0.5)  # optional; loosening -> ConfigError
    chain = SafetyChain(spec, mapping, dt=0.02, limits=limits)
    chain.reset(state, now)                    # clears faults (not the e-stop); the ramp restarts from the last command
    cmd = chain.step(action, state, now)       # SafetyCommand(position|force, kp, kd, mode, interventions, q, dq)
    chain.estop("operator"); chain.release_estop(state, now)
    chain.report()                             # {filter: {"count", "last_time", "max_magnitude"}}

Filters, in order (`order` on each class; `base.py` says how a filter works):

 10 `NonFiniteGuard`    NaN/inf/wrong shape in action, state or clock -> latched fault mode   (guards.py)
 20 `PlausibilityGuard` impossible finite readings (beyond the limits, too fast, gyro/accel
                        beyond the IMU's range, a non-unit quaternion) -> latched fault mode;
                        the rejected reading is not used                                     (guards.py)
 30 `ActionClip`        action -> [-1, 1]                                                    (joint_limits.py)
 40 `ActionMap`         action -> targets/forces (bundle's ActionMapping), policy fade-in blend
 50 `RateLimit`         |target - previous command| <= max_target_rate * dt, in every mode
 60 `PositionLimit`     targets inside the position limits shrunk by the margin (absolute)
 70 `VelocityLimit`     a joint faster than velocity_limit * velocity_scale: no target leading it further
 80 `TorqueLimit`       |kp (target - q) - kd dq| <= torque_limit * torque_scale (target, then gains)
 90 `WorkspaceLimit`    end-effector (MuJoCo FK of the target) inside the workspace box       (workspace.py)
100 `TiltGuard`         roll/pitch beyond tilt_limit -> latched damping                       (guards.py)
110 `Watchdog`          stale joint states / IMU -> latched fault mode; stale command -> hold
120 `EStop`             latched until `release_estop`
130 `StartupRamp`       ramp, then fade-in                                                   (joint_limits.py)

Adding a limit: declare it as a field of `roboreal.robots.safety_spec.SafetySpec` (its metadata
says what a valid value is and which way is tighter: robot.yaml's validation, `SafetyLimits`,
`tighten` and `LIMIT_KEYS` follow from it), and write one filter class decorated with
`register` that names the field in `enforces`, takes its place in the chain with `order`
and builds itself from the chain in `build` (return None where the limit is unset). Every
`SafetyChain` built afterwards runs it; tests/test_safety_registry.py checks that each
limit has exactly one owner.

The gripper (manipulators with one) goes through `chain.gripper(action)`: a finite
opening within [closed, open], sent only while the chain runs the policy.

Modes: startup_ramp | policy | hold | damping | estop (estop behaves as the spec's
fault_mode). hold = PD to the last safe target (on a stale command, a robot that stands on
feet goes to its default pose: `RobotSpec.stands_without_command`); damping = the target
follows the measured position, rate-limited (holding joints whose reading is implausible),
so the robot is not driven: on a position interface that is all there is (the robot keeps
its fixed gains); where the gains travel with the command (``gains="commanded"``, robot.yaml
``ros.command_interface: position_gains``) also kp = 0, kd = damping_kd. Force-controlled robots: hold/ramp = zero force, damping = -damping_kd * dq.

What every command guarantees (position limits and rate always; velocity and torque
wherever those two allow; see `SafetyChain`) is checked on the chain by
tests/test_safety.py and on what arrives on the command topic, over DDS, by
tests/test_safety_wire.py (`wire.WireChecker`).
"""

from roboreal.sim2real.safety.base import FILTERS, LatchingFilter, SafetyFilter, register, registered_filters
from roboreal.sim2real.safety.chain import SafetyChain
from roboreal.sim2real.safety.guards import EStop, NonFiniteGuard, PlausibilityGuard, TiltGuard, Watchdog
from roboreal.sim2real.safety.joint_limits import (
    ActionClip,
    ActionMap,
    PositionLimit,
    RateLimit,
    StartupRamp,
    TorqueLimit,
    VelocityLimit,
)
from roboreal.sim2real.safety.limits import LIMIT_KEYS, SafetyLimits
from roboreal.sim2real.safety.types import MODES, RobotState, SafetyCommand, StepContext
from roboreal.sim2real.safety.workspace import WorkspaceLimit

__all__ = [
    "SafetyChain", "SafetyLimits", "LIMIT_KEYS", "RobotState", "SafetyCommand", "StepContext", "MODES",
    "SafetyFilter", "LatchingFilter", "register", "registered_filters", "FILTERS",
    "NonFiniteGuard", "PlausibilityGuard", "ActionClip", "ActionMap", "RateLimit", "PositionLimit",
    "VelocityLimit", "TorqueLimit", "WorkspaceLimit", "TiltGuard", "Watchdog", "EStop", "StartupRamp",
]
