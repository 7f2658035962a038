"""What the robot receives, checked: the safety chain's promises as properties of the
command stream on the command topic (pure numpy; no ROS import).

`WireChecker` takes each command as it arrives (the message's data, in order) and, when
given, the policy node's ``~/audit`` record of it (`step_record.audit_fields`: the mode, the
gains the robot applies, the measured state the chain used, which filters intervened), and
counts every violation of:

| invariant | holds | needs the audit |
|---|---|---|
| ``finite`` | every value of every command (positions, efforts, gains) | no |
| ``position_limits`` | positions inside [lower + margin, upper - margin]; efforts within the torque bound | no |
| ``rate`` | each position within max_target_rate * dt of the previous command, in every mode | no |
| ``gains`` | commanded gains finite and >= 0 (``position_gains``); the audit's gains are the ones on the wire, or robot.yaml's where the robot applies fixed gains | the second part |
| ``torque`` | |kp (p - q) - kd dq| <= torque_limit * torque_scale with the gains the robot applies and the state the chain used; where that state and the rate window leave no such target (fixed gains), p is the rate window's point nearest to the bound | yes |
| ``velocity`` | a joint measured faster than v_max gets no target leading it further, where the rate window allows | yes |
| ``audit`` | the audit record pairs with the command (same values, consecutive seq) | yes |

The torque and velocity bounds are relative to the measured state, so they can only be
checked with the state the node used; the node's word for that state is checked by the
caller against what it actually published (`HostileRobot` in tests does).
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

from roboreal.robots.spec import RobotSpec

INVARIANTS = ("finite", "position_limits", "rate", "gains", "torque", "velocity", "audit")
_TOL = 1e-9


def fold(intervals: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Intervals in priority order: each is met where it is compatible with those before it,
    else as closely as they allow (the safety chain's constraint semantics)."""
    flo, fhi = intervals[0]
    for lo, hi in intervals[1:]:
        flo, fhi = np.minimum(np.maximum(lo, flo), fhi), np.minimum(np.maximum(hi, flo), fhi)
    return flo, fhi


def torque_interval(tau_max: np.ndarray, q: np.ndarray, dq: np.ndarray, kp: np.ndarray,
                    kd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets t with |kp (t - q) - kd dq| <= tau_max; everything where that cannot be
    computed (unknown state, kp = 0)."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(q) & np.isfinite(dq) & (kp > 0)
        safe = np.where(kp > 0, kp, 1.0)
        centre, half = q + kd * dq / safe, tau_max / safe
        lo, hi = centre - half, centre + half
    ok &= np.isfinite(lo) & np.isfinite(hi)
    return np.where(ok, lo, -np.inf), np.where(ok, hi, np.inf)


class WireChecker:
    """Counts violations of the command-stream invariants (module docstring), command by command.

    >>> checker = WireChecker(spec, dt=0.02, limits=node_limits, interface="forward_command")
    >>> problems = checker.check(msg.data, audit)   # [] when the command keeps every promise
    >>> checker.summary()
    """

    def __init__(self, spec: RobotSpec, dt: float, limits=None, interface: str | None = None):
        from roboreal.sim2real.safety.limits import SafetyLimits

        self.spec, self.dt = spec, float(dt)
        self.limits = limits if limits is not None else SafetyLimits.from_spec(spec)
        self.interface = interface or spec.ros.command_interface
        self.position = spec.control_mode == "position"
        self.n = len(spec.actuated_joints)
        m = self.limits.joint_position_margin
        self.lower, self.upper = spec.lower + m, spec.upper - m
        self.rate = self.limits.max_target_rate * self.dt
        self.tau_max = spec.array("torque_limit") * self.limits.torque_scale
        self.v_max = spec.array("velocity_limit") * self.limits.velocity_scale
        self.kp = spec.array("kp") if self.position else np.zeros(self.n)
        self.kd = spec.array("kd") if self.position else np.zeros(self.n)
        self.previous: np.ndarray | None = None
        self.expected_seq = 1
        self.commands = 0
        self.audited = 0
        self.violations: collections.Counter = collections.Counter()
        self.examples: dict[str, str] = {}  # invariant -> the first violation, described
        self.modes: collections.Counter = collections.Counter()
        self.max_rate_ratio = 0.0  # largest |change| / (max_target_rate * dt) seen
        self.torque_best_effort = 0  # commands where the torque bound could not hold with the rate window

    # ------------------------------------------------------------------ the check
    def check(self, data: Sequence[float], audit: dict | None = None, mode_name: str | None = None) -> list[str]:
        """Check one command (the message's data, as received) and return its violations."""
        values = np.asarray(data, dtype=np.float64)
        found: list[tuple[str, str]] = []
        self.commands += 1
        n = self.n
        gains_on_wire = self.interface == "position_gains"
        want = 3 * n if gains_on_wire else n
        if values.shape != (want,):
            found.append(("finite", f"{values.size} values, expected {want}"))
            return self._record(found)
        p = values[:n]
        if gains_on_wire:
            kp, kd = values[n:2 * n], values[2 * n:]
        else:
            kp, kd = self.kp, self.kd
        if not np.isfinite(values).all():
            found.append(("finite", f"non-finite values {values.tolist()}"))
            return self._record(found)
        if self.position:
            out = (p < self.lower - _TOL) | (p > self.upper + _TOL)
            if out.any():
                i = int(np.flatnonzero(out)[0])
                found.append(("position_limits", f"{self.spec.actuated_names[i]} = {p[i]:.6g} outside "
                              f"[{self.lower[i]:.6g}, {self.upper[i]:.6g}]"))
            if self.previous is not None:
                change = np.abs(p - self.previous)
                self.max_rate_ratio = max(self.max_rate_ratio, float(change.max() / self.rate))
                if (change > self.rate * (1 + _TOL) + _TOL).any():
                    i = int(np.argmax(change))
                    found.append(("rate", f"{self.spec.actuated_names[i]} moved {p[i] - self.previous[i]:+.6g} in "
                                  f"one command (limit {self.rate:.6g})"))
            if gains_on_wire and ((kp < 0).any() or (kd < 0).any()):
                found.append(("gains", f"negative gains kp={kp.tolist()} kd={kd.tolist()}"))
        elif (np.abs(p) > self.tau_max * (1 + _TOL) + _TOL).any():
            found.append(("position_limits", f"efforts {p.tolist()} beyond {self.tau_max.tolist()}"))
        if audit is not None:
            found += self._check_audit(p, kp, kd, audit)
        if mode_name is not None:
            self.modes[mode_name] += 1
        self.previous = p.copy()
        return self._record(found)

    def _check_audit(self, p, kp, kd, audit: dict) -> list[tuple[str, str]]:
        found = []
        self.audited += 1
        seq = int(audit["seq"])
        if seq != self.expected_seq:
            found.append(("audit", f"audit seq {seq}, expected {self.expected_seq} (a command or record was lost)"))
        self.expected_seq = seq + 1
        if not np.array_equal(np.asarray(audit["command"]), p):
            found.append(("audit", "the audit's command is not the one on the wire"))
            return found
        if not (np.array_equal(np.asarray(audit["kp"]), kp) and np.array_equal(np.asarray(audit["kd"]), kd)):
            found.append(("gains", f"the robot applies kp={kp.tolist()} kd={kd.tolist()}, the chain computed with "
                          f"kp={np.asarray(audit['kp']).tolist()} kd={np.asarray(audit['kd']).tolist()}"))
        if not self.position:
            return found
        if self.previous is None:
            return found  # the first command is rate-limited against a pose the wire never saw
        q, dq = np.asarray(audit["q"], dtype=float), np.asarray(audit["dq"], dtype=float)
        limits = [(self.lower, self.upper), (self.previous - self.rate, self.previous + self.rate)]
        with np.errstate(invalid="ignore"):
            over = np.isfinite(q) & (dq > self.v_max)
            under = np.isfinite(q) & (dq < -self.v_max)
        limits.append((np.where(under, q, -np.inf), np.where(over, q, np.inf)))
        lo, hi = fold(limits)
        tol = 1e-9 * (1 + np.abs(p))
        bad = (p < lo - tol) | (p > hi + tol)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            found.append(("velocity", f"{self.spec.actuated_names[i]}: target {p[i]:.6g} leads q={q[i]:.6g} moving at "
                          f"dq={dq[i]:.6g} (> v_max {self.v_max[i]:.4g})"))
        with np.errstate(all="ignore"):
            tau = kp * (p - q) - kd * dq
        finite = np.isfinite(q) & np.isfinite(dq)
        within = ~finite | (np.abs(tau) <= self.tau_max * (1 + 1e-9) + 1e-9)
        if not within.all():
            # fixed gains: the torque bound is met as closely as the higher-priority ones allow
            tlo, thi = fold(limits + [torque_interval(self.tau_max, q, dq, kp, kd)])
            nearest = (p >= tlo - tol) & (p <= thi + tol)
            if self.interface == "position_gains" or not nearest[~within].all():
                i = int(np.flatnonzero(~within)[0])
                found.append(("torque", f"{self.spec.actuated_names[i]}: |kp (p - q) - kd dq| = {abs(tau[i]):.6g} > "
                              f"{self.tau_max[i]:.6g} (p={p[i]:.6g}, q={q[i]:.6g}, dq={dq[i]:.6g}, kp={kp[i]:.4g}, "
                              f"kd={kd[i]:.4g})"))
            else:
                self.torque_best_effort += 1
        return found

    def _record(self, found: list[tuple[str, str]]) -> list[str]:
        for invariant, text in found:
            self.violations[invariant] += 1
            self.examples.setdefault(invariant, f"command {self.commands}: {text}")
        return [f"{i}: {t}" for i, t in found]

    # ------------------------------------------------------------------ report
    def summary(self) -> dict:
        return {"commands": self.commands, "audited": self.audited,
                "violations": {k: int(self.violations.get(k, 0)) for k in INVARIANTS},
                "examples": dict(self.examples), "modes": dict(self.modes),
                "max_rate_ratio": self.max_rate_ratio, "torque_best_effort": self.torque_best_effort}

    @property
    def total_violations(self) -> int:
        return int(sum(self.violations.values()))


def describe(summary: dict) -> str:
    """One line: commands checked and violations per invariant."""
    v = summary["violations"]
    bad = ", ".join(f"{k} {n}" for k, n in v.items() if n) or "none"
    return (f"{summary['commands']} commands checked ({summary['audited']} with their audit): violations {bad}; "
            f"largest change {summary['max_rate_ratio']:.3f} x the rate limit; modes {summary['modes']}")

