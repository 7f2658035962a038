"""Experts that label states for imitation learning: ``expert.act(obs, env) -> (N, A) actions``.

- `ScriptedPandaExpert`: `panda-reach` (and `-sparse`, `-vision`) and `panda-pick(-vision)`, on the
  Panda or any other arm (``env.robot=...``, any number of joints), from
  damped-least-squares inverse kinematics on each world's MuJoCo state, plus a grasp
  script for pick (approach above the cube, descend, close, lift over the bin wall,
  carry to the goal, hold). Not on the simulation hot path: it loops over the envs.
- `PolicyExpert`: a trained policy (a run directory through
  `roboreal.agents.policy.load_policy`, or any ``module(obs[group])``; an image policy also
  gets its cameras' images), including a *privileged teacher* that reads the ``critic`` group
  (e.g. a state policy teaching a student that sees only images and the robot's own state).
- `BundleExpert`: an exported policy bundle (``manifest.yaml`` + ONNX/TorchScript).

`make_expert(spec, env)` builds one from ``"scripted"``, a run directory, a checkpoint
file or a bundle directory (what ``roboreal collect/dagger --expert`` accept).

A human expert is not an object here: a human's labels arrive as recorded interventions
in a dataset (`roboreal.data`), and `roboreal.agents.dagger` consumes them.

Every expert returns actions in [-1, 1] on the env's device, as the env contract wants.
The scripted expert has no memory (its action is a function of the state), so it needs
no reset; `reset()` exists for experts that do keep per-episode state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import torch

from roboreal.config import ConfigError

Obs = dict[str, torch.Tensor]


class Expert:
    """``act(obs, env) -> (N, A)`` float actions in [-1, 1]."""

    name = "expert"
    obs_group: str | None = None  # the observation group a policy expert reads (None: the env state)

    def act(self, obs: Obs, env) -> torch.Tensor:
        raise NotImplementedError

    def reset(self, env_ids=None) -> None:
        pass

    def describe(self) -> dict:
        """Provenance written into datasets (``expert`` attribute)."""
        return {"kind": self.name}


# --------------------------------------------------------------------------------------
# Damped least squares inverse kinematics on one MuJoCo world
# --------------------------------------------------------------------------------------


def dls(jac: np.ndarray, err: np.ndarray, damping: float) -> np.ndarray:
    """Damped least squares step ``J^T (J J^T + lambda^2 I)^-1 e`` (Wampler 1986; Buss 2004).

    Near singularities the damping trades accuracy for bounded joint steps.
    """
    jjt = jac @ jac.T
    return jac.T @ np.linalg.solve(jjt + (damping ** 2) * np.eye(jjt.shape[0]), err)


def orientation_error(current: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Axis-angle-like error (world frame) rotating `current` (3x3) towards `desired` (3x3).

    ``0.5 * sum_i current[:, i] x desired[:, i]`` (Siciliano et al., eq. 3.85): exact in
    direction, ``sin(angle)`` in magnitude, which is what a proportional step wants.
    """
    return 0.5 * sum(np.cross(current[:, i], desired[:, i]) for i in range(3))


class _WorldKinematics:
    """Per-world MjData, site Jacobians and joint indices of an arm env."""

    def __init__(self, env, site: str):
        self.env = env
        model = env.sim.model_of(0)
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site < 0:
            raise ConfigError("expert", f"{env.spec.task}: no site {site!r} in the model")
        names = [j.name for j in env.robot.actuated_joints]
        jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in jids])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in jids])
        self.datas: dict[int, mujoco.MjData] = {}
        self.jacp = np.zeros((3, model.nv))
        self.jacr = np.zeros((3, model.nv))

    def data(self, i: int) -> mujoco.MjData:
        """World `i`'s current state, forward-computed."""
        if i not in self.datas:
            self.datas[i] = mujoco.MjData(self.env.sim.model_of(i))
        return self.env.sim.data_for(i, self.datas[i])

    def site_jacobian(self, i: int, d: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        mujoco.mj_jacSite(self.env.sim.model_of(i), d, self.jacp, self.jacr, self.site)
        return self.jacp[:, self.dof_idx].copy(), self.jacr[:, self.dof_idx].copy()


# --------------------------------------------------------------------------------------
# Scripted panda expert
# --------------------------------------------------------------------------------------


@dataclass
class ScriptedPandaConfig:
    gain: float = 0.5  # fraction of the IK joint step applied to the joint targets per control step
    max_cartesian_error: float = 0.06  # m: the position error handed to IK is clipped to this norm
    damping: float = 0.05  # DLS lambda
    rotation_weight: float = 0.5  # orientation error weight (pick keeps the gripper pointing down)
    nullspace_gain: float = 0.05  # pull towards the default pose in the Jacobian's null space
    velocity_damping: float = 0.04  # s: the TCP velocity times this is subtracted from the position error
    # pick script (every quantity below is read from the state: the script has no memory)
    approach_height: float = 0.10  # m above the cube while the gripper is not yet over it
    funnel_slope: float = 8.0  # allowed height above the grasp point per m of horizontal misalignment
    funnel_deadband: float = 0.005  # m of misalignment that still allows descending all the way
    max_descent: float = 0.02  # m: the downward error handed to IK is clipped to this (slow descent)
    grasp_offset: float = 0.005  # m: TCP height above the cube centre when closing
    grasp_tolerance: float = 0.01  # m: horizontal misalignment at which the gripper closes
    held_width: tuple[float, float] = (0.03, 0.05)  # finger opening (sum, m) of fingers closed on the 4 cm cube
    carry_height: float = 0.12  # m: cube centre height that clears the bin wall when crossing it
    hold_lift: float = 0.008  # m: the cube is held this far above a goal on the table


def arm_ik_action(cfg: "ScriptedPandaConfig", action_scale: float | np.ndarray, jacp: np.ndarray, jacr: np.ndarray,
                  tcp: np.ndarray, tcp_xmat: np.ndarray, q: np.ndarray, qvel: np.ndarray | None,
                  default: np.ndarray, waypoint: np.ndarray, orient: np.ndarray | None = None,
                  max_descent: float | None = None) -> np.ndarray:
    """One step of the scripted arm: the normalized joint-target delta moving the TCP towards
    `waypoint` (and its orientation towards `orient`), from the TCP's Jacobians at joints `q`.

    Pure numpy, so the same step serves the simulated expert and an operator on a robot
    (`roboreal.sim2real.operator`), who computes the Jacobians from measured joint positions.
    `qvel` None: no velocity damping (e.g. when the measured velocities are too noisy).
    """
    c = cfg
    pos_err = np.asarray(waypoint, dtype=np.float64) - tcp
    if max_descent is not None and pos_err[2] < -max_descent:
        pos_err[2] = -max_descent  # come down slowly (no overshoot into the cube or the floor)
    n = np.linalg.norm(pos_err)
    if n > c.max_cartesian_error:
        pos_err *= c.max_cartesian_error / n
    if c.velocity_damping and qvel is not None:  # damps the joint-target servo's overshoot
        pos_err -= c.velocity_damping * (jacp @ qvel)
    if orient is not None:
        rot_err = orientation_error(tcp_xmat, orient)
        jac = np.vstack([jacp, c.rotation_weight * jacr])
        err = np.concatenate([pos_err, c.rotation_weight * rot_err])
    else:
        jac, err = jacp, pos_err
    dq = dls(jac, err, c.damping)
    if c.nullspace_gain:
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + (c.damping ** 2) * np.eye(jac.shape[0]))
        dq += (np.eye(len(q)) - pinv @ jac) @ (c.nullspace_gain * (default - q))
    a = c.gain * dq / action_scale
    peak = np.abs(a).max()
    return a / peak if peak > 1.0 else a


class ScriptedPandaExpert(Expert):
    """Inverse-kinematics expert for `panda-reach(-sparse)` and `panda-pick`.

    Each control step and world:

    1. forward kinematics of the world's current state (``env.sim.data_for(i)``);
    2. a Cartesian waypoint (reach: the goal; pick: see below) and the error
       ``e = clip_norm(waypoint - tcp, max_cartesian_error) - velocity_damping * v_tcp``
       (the damping term stops the joint-target servo from overshooting), plus, for pick,
       the orientation error towards "gripper down, fingers across the cube";
    3. ``dq = DLS(J, e) + (I - J^+ J) k_null (q_default - q)``;
    4. action ``= gain * dq / action_scale``, scaled down as a whole vector if any
       component leaves [-1, 1] (the direction of motion is kept).

    The script has no memory: its action is a function of the current state and goal
    (both read from the env, not from the policy's observation: `panda-reach-vision`'s has
    no goal). That matters for DAgger: whatever state
    the learner drives the robot into, the expert's label there is the same as it would
    be had the expert got there itself (an expert with a hidden phase gives the learner
    labels it cannot explain). For pick the state decides what to do:

    - holding the cube (fingers closed to the cube's width around it): carry it to the
      goal, lifting it over the bin wall first (the horizontal move fades in with height);
    - at the grasp point (TCP at the cube centre): close;
    - otherwise: open and go to the grasp point through a funnel above the cube (the
      allowed height above it grows with the horizontal misalignment), so the fingers come
      down vertically around the cube.
    """

    name = "scripted"

    def __init__(self, env, cfg: ScriptedPandaConfig | None = None):
        task = env.spec.task
        from roboreal.envs.tasks.panda import PandaEnv

        if not isinstance(env, PandaEnv):
            raise ConfigError("expert", f"the scripted expert knows the arm tasks (panda-reach, panda-pick), "
                              f"not {task!r}")
        self.cfg = cfg or ScriptedPandaConfig()
        self.pick = hasattr(env, "object_pos")
        self.kin = _WorldKinematics(env, env.robot.sites.end_effector)
        self.scale = float(env.cfg.action_scale)
        self.default = env.default_joint_pos.cpu().numpy().astype(np.float64)
        self.num_envs = env.num_envs
        # "gripper down, fingers across world y": the TCP orientation of the default pose
        model = env.sim.model_of(0)
        d = mujoco.MjData(model)
        d.qpos[self.kin.qpos_idx] = self.default
        mujoco.mj_kinematics(model, d)
        self.down = d.site_xmat[self.kin.site].reshape(3, 3).copy()
        if self.pick:
            self.object_body = model.jnt_bodyid[env.object_joint]
            self.rest_z = float(env.rest_z)
            self.bin_center = env.bin_center.cpu().numpy().astype(np.float64)
            self.bin_half = 0.155  # m: wall centre lines (robots/panda/model.xml)
            self.wall_top = 0.07
            self.finger_qpos = np.array([model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j)]
                                         for j in env.robot.gripper.joints])

    def describe(self) -> dict:
        from roboreal.config import to_dict

        return {"kind": self.name, "config": to_dict(self.cfg)}

    # ----- the arm: Cartesian waypoint -> joint-target deltas -----
    def _arm_action(self, i: int, d: mujoco.MjData, waypoint: np.ndarray, orient: np.ndarray | None,
                    max_descent: float | None = None) -> np.ndarray:
        jacp, jacr = self.kin.site_jacobian(i, d)
        return arm_ik_action(self.cfg, self.scale, jacp, jacr, d.site_xpos[self.kin.site],
                             d.site_xmat[self.kin.site].reshape(3, 3), d.qpos[self.kin.qpos_idx],
                             d.qvel[self.kin.dof_idx], self.default, waypoint, orient, max_descent)

    def _grasp_orientation(self, d: mujoco.MjData) -> np.ndarray:
        """Gripper down, fingers closing across the cube's faces (yaw of the cube mod 90 deg)."""
        xmat = d.xmat[self.object_body].reshape(3, 3)
        yaw = math.atan2(xmat[1, 0], xmat[0, 0])
        yaw = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
        cz, sz = math.cos(yaw), math.sin(yaw)
        rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
        return rz @ self.down

    def _hold_point(self, goal: np.ndarray) -> np.ndarray:
        """Where the cube should be held: the goal, lifted a little off the table, and moved
        (within the success radius) out of the bin walls when the goal lies inside one."""
        p = goal.copy()
        p[2] = max(p[2], self.rest_z + self.cfg.hold_lift) if p[2] < self.rest_z + 0.02 else p[2]
        if p[2] - 0.02 < self.wall_top + 0.005:  # the cube's bottom is below the wall top: keep clear of walls
            rel = p[:2] - self.bin_center[:2]
            for k in range(2):
                other = 1 - k
                if abs(rel[other]) <= self.bin_half + 0.03:
                    gap = abs(rel[k]) - self.bin_half
                    if abs(gap) < 0.028:  # cube (2 cm half size) + clearance would touch the wall
                        side = 1.0 if gap >= 0 else -1.0  # outside of the wall: +, inside: -
                        rel[k] = math.copysign(self.bin_half + side * 0.028, rel[k])
            p[:2] = self.bin_center[:2] + rel
        return p

    # ----- the batched interface -----
    @torch.no_grad()
    def act(self, obs: Obs, env) -> torch.Tensor:
        # the goal from the env's state, like the rest of the world (a vision task's policy
        # observation has none)
        goals = env.goal.detach().cpu().double().numpy()
        actions = np.zeros((env.num_envs, env.action_size))
        for i in range(env.num_envs):
            d = self.kin.data(i)
            if self.pick:
                actions[i] = self._pick_action(i, d, goals[i])
            else:
                actions[i] = self._arm_action(i, d, goals[i], None)
        return torch.as_tensor(np.clip(actions, -1.0, 1.0), dtype=torch.float32, device=env.device)

    def _pick_action(self, i: int, d: mujoco.MjData, goal: np.ndarray) -> np.ndarray:
        c = self.cfg
        tcp = d.site_xpos[self.kin.site].copy()
        cube = d.xpos[self.object_body].copy()
        width = float(d.qpos[self.finger_qpos].sum())
        orient = self._grasp_orientation(d)
        holding = c.held_width[0] <= width <= c.held_width[1] and np.linalg.norm(tcp - cube) < 0.025
        if holding:
            # carry: the cube (not the TCP) goes to the hold point; over the wall first
            hold = self._hold_point(goal)
            offset = tcp - cube
            far = np.linalg.norm(hold[:2] - cube[:2])
            up = min(1.0, max(0.0, (far - 0.02) / 0.03))  # 0 near the goal, 1 when >= 5 cm away
            cube_target = hold.copy()
            cube_target[2] = hold[2] + up * max(0.0, c.carry_height - hold[2])
            clear = self.wall_top + 0.02 + 0.01  # cube centre height with its bottom 1 cm over the wall
            s = min(1.0, max(0.0, (cube[2] - clear) / 0.03)) if far > 0.04 else 1.0
            cube_target[:2] = cube[:2] + s * (hold[:2] - cube[:2])
            return np.concatenate([self._arm_action(i, d, cube_target + offset, orient), [-1.0]])
        grasp = cube + np.array([0.0, 0.0, c.grasp_offset])
        misalign = np.linalg.norm(tcp[:2] - grasp[:2])
        height = min(c.approach_height, max(0.0, misalign - c.funnel_deadband) * c.funnel_slope)
        if width < c.held_width[0]:  # fingers closed on nothing: stay above the cube while they open
            height = max(height, 0.045)
        target = grasp + np.array([0.0, 0.0, height])
        at_grasp = misalign < c.grasp_tolerance and -0.02 < tcp[2] - grasp[2] < 0.01
        gripper = -1.0 if at_grasp and width >= c.held_width[0] else 1.0
        slow = c.max_descent if tcp[2] - grasp[2] < 0.06 else None  # the last few cm: slowly
        return np.concatenate([self._arm_action(i, d, target, orient, slow), [gripper]])


# --------------------------------------------------------------------------------------
# Trained policies as experts
# --------------------------------------------------------------------------------------


class PolicyExpert(Expert):
    """A deterministic policy ``module(obs[obs_group]) -> actions`` as the expert.

    ``obs_group="critic"`` makes a privileged teacher: it reads simulator state the
    student never sees (the student learns from the ``policy`` group).
    """

    name = "policy"

    def __init__(self, module: torch.nn.Module, obs_group: str = "policy", source: str = "", info: dict | None = None):
        self.module = module.eval()
        self.obs_group = obs_group
        self.source = source
        self.info = info or {}

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", obs_group: str | None = None,
                 device: str = "cpu") -> "PolicyExpert":
        from roboreal.agents.policy import load_policy

        try:
            module, info = load_policy(run_dir, which, device=device)
        except FileNotFoundError as e:
            raise ConfigError("expert", str(e)) from None
        return cls(module, obs_group or info["obs_group"], str(run_dir), info)

    def describe(self) -> dict:
        return {"kind": self.name, "source": self.source, "obs_group": self.obs_group,
                "task": self.info.get("task"), "algo": self.info.get("algo"), "checkpoint": self.info.get("checkpoint")}

    @torch.no_grad()
    def act(self, obs: Obs, env) -> torch.Tensor:
        if self.obs_group not in obs:
            raise ConfigError("expert", f"the expert reads observation group {self.obs_group!r}; "
                                        f"the env has {sorted(obs)}")
        from roboreal.agents.policy import policy_action

        param = next(iter(self.module.parameters()), None)
        if param is not None:  # the group (and the images an image policy reads) on the module's device
            cameras = list(getattr(self.module, "image_inputs", None) or [])
            obs = {k: obs[k].to(param.device) for k in [self.obs_group, *cameras] if k in obs}
        return policy_action(self.module, obs, self.obs_group).to(env.device, torch.float32).clamp(-1.0, 1.0)


class BundleExpert(Expert):
    """An exported bundle (`roboreal.policy_bundle`) as the expert; reads the manifest's group."""

    name = "bundle"

    def __init__(self, path: str | Path, runtime: str = "onnx"):
        from roboreal.policy_bundle import load_bundle

        self.path = str(path)
        self.bundle = load_bundle(path, runtime=runtime)
        self.obs_group = self.bundle.manifest["observation"]["group"]
        if self.bundle.discrete:
            raise ConfigError("expert", f"{path}: a discrete-action bundle cannot label continuous actions")

    def describe(self) -> dict:
        t = self.bundle.manifest.get("training", {})
        return {"kind": self.name, "source": self.path, "obs_group": self.obs_group, "task": t.get("task"),
                "algo": t.get("algo")}

    @torch.no_grad()
    def act(self, obs: Obs, env) -> torch.Tensor:
        x = obs[self.obs_group].detach().cpu().numpy()
        return torch.as_tensor(self.bundle.act(x), dtype=torch.float32, device=env.device).clamp(-1.0, 1.0)


def make_expert(spec: str, env, obs_group: str | None = None) -> Expert:
    """``"scripted"`` | a run directory | a checkpoint ``.pt`` | a bundle directory."""
    if spec == "scripted":
        return ScriptedPandaExpert(env)
    path = Path(spec)
    if (path / "manifest.yaml").is_file():
        expert: Expert = BundleExpert(path)
    elif path.is_file() or (path / "checkpoints").is_dir():
        expert = PolicyExpert.from_run(path, obs_group=obs_group, device=str(env.device))
    else:
        raise ConfigError("expert", f"{spec!r} is neither 'scripted', a run directory (checkpoints/), "
                                    "a checkpoint file nor a bundle directory (manifest.yaml)")
    if obs_group is not None:
        expert.obs_group = obs_group
    return expert
