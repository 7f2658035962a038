"""The end-effector workspace box: MuJoCo forward kinematics of each target (manipulators).

The only part of the safety chain that needs MuJoCo, and only where robot.yaml sets a
``safety.workspace_min`` / ``workspace_max`` box.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from roboreal.config import ConfigError
from roboreal.sim2real.safety.base import SafetyFilter, register
from roboreal.sim2real.safety.types import StepContext, all_finite

if TYPE_CHECKING:
    from roboreal.sim2real.safety.chain import SafetyChain


@register
class WorkspaceLimit(SafetyFilter):
    """Keeps a manipulator's end-effector site inside [workspace_min, workspace_max].

    Forward kinematics of the *target* joint positions on the robot's own MuJoCo model
    (`mj_kinematics` on one MjData). A target outside the box is backed off along the
    segment from a safe anchor to the target (bisection, keeping the furthest point that
    is no further outside the box than the anchor). Anchors, first inside the box wins:
    the measured pose and the previous target, each clipped into the feasible interval of
    the earlier filters (position, rate, velocity, torque). So the result keeps every one of
    those bounds, and is inside the box whenever one of the anchors is: the box gives way
    only to the torque and velocity bounds, and then only towards where the robot actually
    is (a robot pushed out of the box is not fought with more torque than the bound).
    Magnitude: the largest joint move (rad).

    Cost: one `mj_kinematics` per step (none if the target is the one checked last), and
    one per bisection step while backing off.
    """

    name = "workspace"
    order = 90
    enforces = ("workspace_min", "workspace_max")

    def __init__(self, model, site: str, joint_names: Sequence[str], box_min, box_max, iterations: int = 16):
        import mujoco

        self._mujoco = mujoco
        self.model = model
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site < 0:
            raise ValueError(f"site {site!r} not in the model")
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in joint_names]
        self.qpos_adr = np.array([model.jnt_qposadr[i] for i in ids], dtype=int)
        first = int(self.qpos_adr[0]) if len(self.qpos_adr) else 0
        if np.array_equal(self.qpos_adr, np.arange(first, first + len(self.qpos_adr))):  # contiguous: a slice
            self._qpos_index = slice(first, first + len(self.qpos_adr))
        else:
            self._qpos_index = self.qpos_adr
        self.box_min = np.asarray(box_min, dtype=np.float64)
        self.box_max = np.asarray(box_max, dtype=np.float64)
        self._box = (self.box_min.tolist(), self.box_max.tolist())
        self.iterations = iterations
        self._new_data()

    @classmethod
    def build(cls, chain: SafetyChain) -> WorkspaceLimit | None:
        limits, spec = chain.limits, chain.spec
        if limits.workspace_min is None:
            return None
        if not chain.position_control or spec.sites.end_effector is None:
            raise ConfigError("safety.workspace_min",
                              "a workspace box needs a position-controlled robot with sites.end_effector")
        from roboreal.robots.model import build_model  # the model with robot.yaml's values written in

        return cls(build_model(spec), spec.sites.end_effector, chain.joint_names, limits.workspace_min,
                   limits.workspace_max)

    def _new_data(self) -> None:
        """A fresh MjData (qpos = qpos0, which only the arm's entries ever leave) and views into it."""
        self.data = self._mujoco.MjData(self.model)
        self._qpos, self._site_xpos = self.data.qpos, self.data.site_xpos
        self._last: tuple[bytes, float] | None = None  # (joints, outside) of the last check

    def __deepcopy__(self, memo):
        """Copies share the (read-only) model and get their own MjData."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._new_data()
        memo[id(self)] = new
        return new

    def _kinematics(self, joints: np.ndarray) -> None:
        self._qpos[self._qpos_index] = joints
        self._mujoco.mj_kinematics(self.model, self.data)

    def end_effector(self, joints: np.ndarray) -> np.ndarray:
        self._kinematics(joints)
        return self._site_xpos[self.site].copy()

    def outside(self, joints: np.ndarray) -> float:
        """How far (m, max over axes) the end-effector is outside the box; 0 inside."""
        key = np.asarray(joints, dtype=np.float64).tobytes()
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        self._kinematics(joints)
        p = self._site_xpos[self.site]
        x, y, z = p.tolist()
        (x0, y0, z0), (x1, y1, z1) = self._box
        if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
            v = max(0.0, max(x0 - x, y0 - y, z0 - z), max(x - x1, y - y1, z - z1))
        else:  # NaN: as numpy's max propagates it
            v = float(max(0.0, (self.box_min - p).max(), (p - self.box_max).max()))
        self._last = (key, v)
        return v

    def apply(self, ctx: StepContext) -> None:
        if not ctx.position_control or ctx.behaviour == "damping":
            return
        target = ctx.value
        outside = self.outside(target)
        if outside == 0.0:
            return
        flo, fhi = ctx.feasible()
        candidates = []
        if all_finite(ctx.q):
            candidates.append(np.clip(ctx.q, flo, fhi))
        candidates.append(np.clip(ctx.prev, flo, fhi))
        anchor, worst = None, math.inf
        for c in candidates:
            v = self.outside(c)
            if v < worst:
                anchor, worst = c, v
            if v == 0.0:
                break
        if outside <= worst:
            return
        good, bad = 0.0, 1.0
        towards = target - anchor
        for _ in range(self.iterations):
            mid = 0.5 * (good + bad)
            if self.outside(anchor + mid * towards) <= worst:
                good = mid
            else:
                bad = mid
        new = anchor + good * towards
        ctx.intervene(self.name, np.abs(new - target).max())
        ctx.value = new

