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

Filters, in order (each a small class in `filters.py`):

 1. `NonFiniteGuard`  NaN/inf/wrong shape in action, state or clock -> latched fault mode
    `PlausibilityGuard` impossible finite readings (beyond the limits, too fast, gyro/accel
                      beyond the IMU's range, a non-unit quaternion) -> latched fault mode;
                      the rejected reading is not used
 2. `ActionClip`      action -> [-1, 1]
 3. `ActionMap`       action -> targets/forces (bundle's ActionMapping), policy fade-in blend
    `RateLimit`       |target - previous command| <= max_target_rate * dt, in every mode
 4. `PositionLimit`   targets inside the position limits shrunk by the margin (absolute)
 5. `VelocityLimit`   a joint faster than velocity_limit * velocity_scale: no target leading it further
 6. `TorqueLimit`     |kp (target - q) - kd dq| <= torque_limit * torque_scale (target, then gains)
 7. `WorkspaceLimit`  end-effector (MuJoCo FK of the target) inside the workspace box
 8. `TiltGuard`       roll/pitch beyond tilt_limit -> latched damping
 9. `Watchdog`        stale joint states / IMU -> latched fault mode; stale command -> hold
10. `EStop`           latched until `release_estop`;  `StartupRamp`: ramp, then fade-in

The gripper (manipulators with one) goes through `chain.gripper(action)`: a finite
opening within [closed, open], sent only while the chain runs the policy.

Modes: startup_ramp | policy | hold | damping | estop (estop behaves as the spec's
fault_mode). hold = PD to the last safe target (quadruped on a stale command: the default
pose); damping = the target follows the measured position, rate-limited (holding joints
whose reading is implausible), so the robot is not driven: on a position interface that is
all there is (the robot keeps its fixed gains); where the gains travel with the command
(``gains="commanded"``, robot.yaml ``ros.command_interface: position_gains``) also kp = 0,
kd = damping_kd. Force-controlled robots: hold/ramp = zero force, damping = -damping_kd * dq.

What every command guarantees (position limits and rate always; velocity and torque
wherever those two allow; see `SafetyChain`) is checked on the chain by
tests/test_safety.py and on what arrives on the command topic, over DDS, by
tests/test_safety_wire.py (`wire.WireChecker`).
"""

from roboreal.sim2real.safety.chain import SafetyChain
from roboreal.sim2real.safety.filters import (
    ActionClip,
    ActionMap,
    EStop,
    NonFiniteGuard,
    PlausibilityGuard,
    PositionLimit,
    RateLimit,
    SafetyFilter,
    StartupRamp,
    TiltGuard,
    TorqueLimit,
    VelocityLimit,
    Watchdog,
    WorkspaceLimit,
)
from roboreal.sim2real.safety.limits import SafetyLimits
from roboreal.sim2real.safety.types import MODES, RobotState, SafetyCommand, StepContext

__all__ = [
    "SafetyChain", "SafetyLimits", "RobotState", "SafetyCommand", "StepContext", "MODES",
    "SafetyFilter", "NonFiniteGuard", "PlausibilityGuard", "ActionClip", "ActionMap", "RateLimit", "PositionLimit",
    "VelocityLimit", "TorqueLimit", "WorkspaceLimit", "TiltGuard", "Watchdog", "EStop", "StartupRamp",
]
