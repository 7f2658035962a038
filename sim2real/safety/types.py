"""Data passed through the safety chain: the measured state in, the command out, and the
per-step context the filters work on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np

MODES: tuple[str, ...] = ("startup_ramp", "policy", "hold", "damping", "estop")

# How a step's mode is decided: every supervising filter may request a mode; the most
# severe request wins. A stale *command* asks for a "soft" hold that the startup ramp
# outranks (the ramp needs no command); every latched fault outranks the ramp.
RANK = {"policy": 0.0, "soft_hold": 0.5, "startup_ramp": 1.0, "hold": 2.0, "damping": 3.0, "estop": 4.0}

# Priorities of the target constraints (lower wins where two cannot both hold; see
# `StepContext.constrain`). Position limits and the target rate are properties of the
# command alone, so they hold always, whatever the sensors say (the previous command is
# inside the limits, so the two are always compatible). The measured-velocity bound and
# the torque bound depend on the measurement and hold wherever the first two allow (where
# the gains travel with the command, the torque bound is then met by scaling them).
PRIO_POSITION, PRIO_RATE, PRIO_VELOCITY, PRIO_TORQUE = 0, 1, 2, 3

_BIG = float(np.finfo(np.float64).max)  # reported instead of an infinite magnitude


# The chain runs every control period on vectors of a few to a few dozen values, where a
# numpy reduction (`.all()`, `.any()`) costs more than the loop it replaces: these helpers
# answer the same questions on the Python floats of a 1-D float array.
def all_finite(a: np.ndarray) -> bool:
    """``bool(np.isfinite(a).all())`` for a short 1-D float array."""
    return all(map(math.isfinite, a.tolist()))


def all_positive(a: np.ndarray) -> bool:
    """``bool((a > 0).all())`` for a short 1-D float array (NaN is not positive)."""
    return all(map((0.0).__lt__, a.tolist()))


def same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """True if `a` and `b` hold equal values (NaN is unequal to everything): the cheap test
    before computing how far a filter moved a vector, which is usually not at all."""
    return a.tolist() == b.tolist()


@dataclass
class RobotState:
    """What the robot measured, as the node last received it.

    position, velocity: joint positions / velocities in spec joint order, either for all
        `spec.joints` or for the actuated joints only. May contain NaN/inf (treated as a fault).
    orientation: base quaternion (w, x, y, z), world <- base. Quadrupeds: this or `gravity`.
    gravity: projected gravity in the base frame, (0, 0, -1) upright (legged_gym convention;
        any norm). An accelerometer reading (+g up) would look upside-down: fails safe.
    angular_velocity, linear_acceleration: the IMU's gyro (rad/s) and accelerometer (m/s^2)
        readings, for the plausibility check (None: not measured).
    *_stamp: when the last JointState / Imu / command (cmd_vel or goal) was measured, on
        the clock of `now` (the node maps header stamps onto it, so a delayed stream or a
        frozen stamp ages like silence). None means "never received" and counts as stale.
    """

    position: np.ndarray
    velocity: np.ndarray
    orientation: np.ndarray | None = None
    gravity: np.ndarray | None = None
    angular_velocity: np.ndarray | None = None
    linear_acceleration: np.ndarray | None = None
    joint_state_stamp: float | None = None
    imu_stamp: float | None = None
    command_stamp: float | None = None


@dataclass(frozen=True)
class SafetyCommand:
    """What leaves the chain: the only thing a node may send to the robot.

    position: joint position targets (actuated joints, spec order) for position-controlled
        robots, else None. In damping mode it follows the measured position (within the
        rate limit), so that the robot is not driven: on a position interface, which carries
        no gains, damping is realised by these targets alone.
    force: joint forces/torques for force-controlled robots (e.g. cartpole), else None.
    kp, kd: the PD gains the robot applies this step. Fixed gains (a position interface):
        robot.yaml's kp/kd, always. Commanded gains (`position_gains`: they travel with the
        command): damping has kp = 0, kd = damping_kd, and the chain scales them down so
        that |kp*(target - q) - kd*dq| stays within the torque bound.
    mode: startup_ramp | policy | hold | damping | estop.
    interventions: filter name -> magnitude, for each filter that intervened this step.
    q, dq: the measured actuated positions / velocities the chain used this step, NaN where
        a reading was missing, not finite or rejected as implausible (no bound was computed
        from it).
    """

    mode: str
    position: np.ndarray | None
    force: np.ndarray | None
    kp: np.ndarray
    kd: np.ndarray
    interventions: dict[str, float]
    joint_names: tuple[str, ...] = ()
    q: np.ndarray | None = None
    dq: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        """`position` or `force`, whichever this robot uses."""
        return self.position if self.position is not None else self.force


@dataclass
class StepContext:
    """One control step as it passes through the filters (mutable, per step).

    `behaviour` is what the robot does this step (policy | ramp | hold | damping); `mode`
    is the label reported (e-stop behaves as the spec's fault_mode, labelled "estop").
    `value` holds the joint targets (position control) or forces (force control).
    """

    now: float
    dt: float
    action: np.ndarray | None  # raw action (None: unusable, e.g. wrong shape)
    q: np.ndarray  # measured actuated positions; NaN where unknown
    dq: np.ndarray
    state: RobotState | None
    prev: np.ndarray  # last output (targets or forces); always finite and within limits
    position_control: bool
    kp: np.ndarray
    kd: np.ndarray
    mode: str = "policy"
    rank: float = 0.0
    behaviour: str = "policy"
    value: np.ndarray | None = None
    fade: float = 1.0  # policy fade-in weight in [0, 1]
    fade_anchor: np.ndarray | None = None  # blended from this pose
    prev_behaviour: str = "policy"
    # joints whose measured position is not to be trusted this step (non-finite, or flagged
    # by the plausibility guard): damping holds their last target instead of following them
    suspect: np.ndarray | None = None
    interventions: dict[str, float] = field(default_factory=dict)
    # (priority, lo, hi), kept sorted by priority (stable); add with `constrain` only
    constraints: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    # per-step caches: _folds[i] = feasible interval (lo, hi) of constraints[:i + 1];
    # _gravity = (state, projected gravity of that state)
    _folds: list = field(default_factory=list, init=False, repr=False, compare=False)
    _gravity: tuple | None = field(default=None, init=False, repr=False, compare=False)

    # ----- mode -----
    def request(self, mode: str, rank: float | None = None) -> None:
        rank = RANK[mode] if rank is None else rank
        if rank > self.rank:
            self.rank, self.mode = rank, mode

    # ----- bookkeeping -----
    def intervene(self, name: str, magnitude: float) -> None:
        magnitude = float(magnitude)
        if magnitude != magnitude:  # NaN
            magnitude = 0.0
        elif magnitude in (math.inf, -math.inf):
            magnitude = _BIG
        self.interventions[name] = max(self.interventions.get(name, 0.0), magnitude)

    def gravity(self, compute):
        """``compute(self.state)`` (the projected gravity, `geometry.gravity_direction`), computed
        once per step and state: the non-finite guard and the tilt guard both need it."""
        cached = self._gravity
        if cached is None or cached[0] is not self.state:
            cached = self._gravity = (self.state, compute(self.state))
        return cached[1]

    # ----- target constraints -----
    def constrain(self, priority: int, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the interval [lo, hi] (per joint; lo <= hi, no NaN) and return the feasible interval.

        The feasible interval folds all constraints in priority order; where one cannot be
        met together with the higher-priority ones, the interval collapses to the point of
        the higher-priority interval nearest to it (it is met as far as possible, and no
        lower-priority constraint can move the target further away from it).
        """
        k = len(self.constraints)
        while k and self.constraints[k - 1][0] > priority:  # after every constraint of the same priority
            k -= 1
        self.constraints.insert(k, (priority, lo, hi))
        del self._folds[k:]  # the folds from here on include the new constraint
        return self.feasible()

    def feasible(self) -> tuple[np.ndarray, np.ndarray]:
        """The feasible interval of the constraints, see `constrain`.

        Folding [lo, hi] into the feasible interval [flo, fhi] clips both ends into it: the
        intersection where they overlap, else the end of [flo, fhi] nearest to [lo, hi].
        The fold of every prefix of `constraints` is kept, so adding a constraint refolds
        only those of a lower priority. The arrays returned are shared: do not modify them.
        """
        cons = self.constraints
        end = len(cons)
        if not end:
            n = len(self.prev)
            return np.full(n, -np.inf), np.full(n, np.inf)
        folds = self._folds
        for _, lo, hi in cons[len(folds):end]:
            if folds:
                flo, fhi = folds[-1]
                lo, hi = np.minimum(np.maximum(flo, lo), fhi), np.minimum(np.maximum(flo, hi), fhi)
            folds.append((lo, hi))
        return folds[end - 1]

    def clip_to(self, name: str, lo: np.ndarray, hi: np.ndarray) -> None:
        """Clip `value` into [lo, hi] and record the change as `name`'s intervention."""
        new = np.minimum(np.maximum(self.value, lo), hi)  # np.clip, without its overhead
        if not same_values(new, self.value):
            largest = np.abs(new - self.value).max()
            if largest > 0:  # not NaN
                self.intervene(name, largest)
        self.value = new
