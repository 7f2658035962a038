"""Base class for MuJoCo tasks: a task is named terms over a batched simulation.

A task subclass declares (mjlab/Isaac Lab manager style, in plain methods):

- observation terms: `_observation_terms()` -> {group: [ObsTerm, ...]} (ordered), each by
  source and properties (`roboreal.control.observation`, shared with the robot's observation
  builder), and `_readings()`: where the sim's values for those sources come from,
- reward terms: methods `_reward_<name>()` -> (N,) tensors, weighted by `cfg.rewards`,
- termination terms: `_terminations()` -> {name: (N,) bool},
- how actions become actuator controls: `_action_to_ctrl(actions)`,
- the initial state and per-episode sampling: `_initial_state(env_ids)`, `_reset_task(env_ids)`.

The base class does everything shared: physics stepping, action latency, auto-reset
with the true final observation kept, per-term reward logging, episode statistics,
observation noise, pushes and domain randomization events.

One module although it is over 400 lines: it is the batched env contract's one
implementation (the step order, term evaluation, auto-reset and the true last
observation), which a task author reads in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import mujoco
import numpy as np
import torch

from roboreal.control.observation import (PRIVILEGED, ObservationError, Readings, SiteKinematics, Term, finish,
                                          raw_value, fill_history, stack_history, single_joint)
from roboreal.envs.core import BatchedEnv, EnvSpec, EpisodeTracker, Obs
from roboreal.envs.randomization import RandomizationCfg, Randomizer, give_friction_to_targets
from roboreal.envs.sim.backend import BACKENDS, BatchSim
from roboreal.envs.sim.camera_renderer import RenderCfg, make_camera_renderer
from roboreal.envs.sim.mujoco_backend import MujocoBatchSim
from roboreal.envs.sim.warp_backend import WarpSimCfg
from roboreal.config import ConfigError
from roboreal.robots.cameras import CameraSpec
from roboreal.robots.model import build_model, imu_sensor_slices, target_aliases
from roboreal.robots.needs import RobotNeeds, check_needs
from roboreal.robots.spec import RobotSpec, load_robot
from roboreal.control.action import ActionMapping


@dataclass
class TaskCfg:
    """Fields every MuJoCo task has. Task configs subclass this."""

    # The robot: a name (roboreal/robots, $ROBOREAL_ROBOT_PATH, the roboreal.robots entry
    # points) or a path to a robot.yaml or its folder. Each task sets its own default.
    robot: str = ""
    episode_length_s: float = 10.0
    # The simulation step and the control rate are the task's, whatever the MJCF's
    # <option timestep> says: control_dt = physics_dt * decimation.
    physics_dt: float = 0.005
    decimation: int = 4  # physics steps per control step
    rewards: dict[str, float] = field(default_factory=dict)  # term -> weight (0 disables)
    reward_dt_scaled: bool = False  # multiply the weighted sum by the control dt (legged_gym style)
    # Clip the summed reward at zero (legged_gym's only_positive_rewards): while the penalties
    # outweigh the task reward, ending the episode early is not the better option.
    only_positive_rewards: bool = False
    observation_noise: dict[str, float] = field(default_factory=dict)  # policy term -> uniform noise half-width
    # policy term -> H: the policy sees the term's last H values, newest first (`Term.history`);
    # a short history lets a blind policy feel what it does not observe (a push, the slope)
    observation_history: dict[str, int] = field(default_factory=dict)
    randomization: RandomizationCfg = field(default_factory=lambda: RandomizationCfg(enabled=False))
    warp: WarpSimCfg = field(default_factory=WarpSimCfg)  # MuJoCo Warp backend options (ignored by "mujoco")
    # Cameras of the scene the task adds (robot.yaml declares the robot's own, e.g. a wrist camera).
    cameras: list[CameraSpec] = field(default_factory=list)
    # Cameras (robot.yaml's or the task's) rendered into the observation: one uint8 (N, C, H, W)
    # entry per camera, keyed by its name, beside the vector groups.
    image_observations: tuple[str, ...] = ()
    render: RenderCfg = field(default_factory=RenderCfg)  # renderer threads and visual quality


@dataclass(frozen=True)
class ObsTerm(Term):
    """One named observation term: a `roboreal.control.observation.Term` (source, scale, clip,
    offset, wrap, relative_to). A deployable term is computed by its source's shared function
    from the readings the env provides (`_readings`), exactly as the robot's observation
    builder computes it; a ``source="privileged"`` term gives `fn`, the raw (N, k) value."""

    fn: Callable[[], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.fn is None) == (not self.deployable):
            raise ObservationError(f"observation term {self.name!r}: give `fn` exactly for source "
                                   f"{PRIVILEGED!r} (a deployable term is computed from its source)")


NOISY_GROUPS = ("policy", "observation")  # cfg.observation_noise applies to these groups' terms


class MujocoTaskEnv(BatchedEnv):
    task_name: str = ""
    goal_conditioned: bool = False
    needs: RobotNeeds = RobotNeeds(kinds=("quadruped", "manipulator", "cartpole"))  # checked at make

    def __init__(self, cfg: TaskCfg, num_envs: int = 1, device: str | torch.device = "cpu", seed: int = 0,
                 nthread: int | None = None, backend: str = "mujoco"):
        self.cfg = cfg
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.seed = seed
        if not cfg.robot:
            raise ConfigError("robot", f"{type(cfg).__name__} names no robot (set robot=NAME or a path)")
        if not (cfg.physics_dt > 0 and cfg.decimation >= 1):
            raise ConfigError("physics_dt" if not cfg.physics_dt > 0 else "decimation",
                              f"must be positive, got {cfg.physics_dt if not cfg.physics_dt > 0 else cfg.decimation}")
        self.robot: RobotSpec = load_robot(cfg.robot)
        # robot.yaml's gains and ranges written in; what the task needs and the MJCF lacks added
        self.model = build_model(self.robot, tuple(cfg.cameras))
        check_needs(self.robot, self.needs, self.task_name or type(self).__name__, self.model)
        self.model.opt.timestep = cfg.physics_dt
        aliases = target_aliases(self.robot, self.model)  # the robot's parts by role, for randomization targets
        give_friction_to_targets(cfg.randomization, self.model, aliases)
        self.physics_dt = float(self.model.opt.timestep)
        self.control_dt = self.physics_dt * cfg.decimation
        self.max_episode_steps = max(1, int(round(cfg.episode_length_s / self.control_dt)))
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r} (available: {', '.join(BACKENDS)})")
        self.backend = backend
        if backend == "warp":
            from roboreal.envs.sim.warp_backend import WarpBatchSim  # imports warp only when asked for

            self.sim: BatchSim = WarpBatchSim(self.model, self.num_envs, cfg.decimation, self.device, cfg.warp)
            self.device = self.sim.device  # "cuda" -> "cuda:0": every env tensor lives with the Warp arrays
        else:
            self.sim = MujocoBatchSim(self.model, self.num_envs, cfg.decimation, nthread=nthread)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

        self._sensor_slices = {
            mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_SENSOR, i):
                slice(self.model.sensor_adr[i], self.model.sensor_adr[i] + self.model.sensor_dim[i])
            for i in range(self.model.nsensor)
        }
        self.actuated = self.robot.actuated_joints
        self.joint_qpos_idx = torch.tensor([self.model.jnt_qposadr[self._jid(j.name)] for j in self.actuated],
                                           device=self.device)
        self.joint_qvel_idx = torch.tensor([self.model.jnt_dofadr[self._jid(j.name)] for j in self.actuated],
                                           device=self.device)
        self.default_joint_pos = torch.tensor(self.robot.array("default"), dtype=torch.float32, device=self.device)
        self.has_free_base = self.model.njnt > 0 and self.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE

        self.action_mapping = self._action_mapping()
        self.action_size = self._action_size()
        self.randomizer = Randomizer(cfg.randomization, self.sim, self.num_envs, seed, self.device,
                                     actuator_joint_ids=self.model.jnt_dofadr[
                                         [self._jid(j.name) for j in self.actuated]],
                                     aliases=aliases)
        latency = cfg.randomization.action_latency if cfg.randomization.enabled else None
        self.max_latency = int(latency.range[1]) if latency is not None else 0
        self.action_history = torch.zeros(self.num_envs, self.max_latency + 1, self.action_size, device=self.device)
        self.actions = torch.zeros(self.num_envs, self.action_size, device=self.device)
        self.last_actions = torch.zeros_like(self.actions)
        self.episode_step = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.sim_time = 0.0
        self.tracker = EpisodeTracker(self.num_envs, self.device)
        self._push_next = cfg.randomization.push.interval_s if (cfg.randomization.enabled and cfg.randomization.push) else None

        self.reward_names = [k for k, w in cfg.rewards.items() if w != 0.0]
        for name in self.reward_names:
            if not hasattr(self, f"_reward_{name}"):
                raise ValueError(f"rewards.{name}: {self.task_name} has no reward term {name!r}")
        self.episode_reward_sums = torch.zeros(self.num_envs, len(self.reward_names), device=self.device)

        self._refresh()
        self._init_task_buffers()
        self.randomizer.on_startup()
        self._obs_terms = self._observation_terms()
        noisy_terms = {t.name for g in ("policy", "observation") for t in self._obs_terms.get(g, [])}
        for name in cfg.observation_noise:
            if name not in noisy_terms:
                raise ValueError(f"observation_noise.{name}: {self.task_name} has no policy observation term {name!r}")
        for name, length in cfg.observation_history.items():
            if name not in noisy_terms:
                raise ConfigError(f"observation_history.{name}", f"{self.task_name} has no policy observation term "
                                  f"{name!r} (known: {', '.join(sorted(noisy_terms))})")
            try:
                self._obs_terms = {g: [replace(t, history=length) if (t.name == name and g in NOISY_GROUPS) else t
                                       for t in terms] for g, terms in self._obs_terms.items()}
            except ObservationError as e:
                raise ConfigError(f"observation_history.{name}", str(e).split(": ", 1)[-1]) from None
        sizes = self._setup_observations()
        if self.goal_conditioned:
            sizes["policy"] = sizes["observation"] + sizes["desired_goal"]
        self.cameras = self._image_cameras(set(sizes))
        self.camera_renderer = (make_camera_renderer(self.sim, self.cameras, cfg.render, cfg.randomization.camera
                                                     if cfg.randomization.enabled else None, seed)
                                if self.cameras else None)
        self.spec = EnvSpec(task=self.task_name, observation_sizes=sizes, action_size=self.action_size,
                            action_type=self._action_type(), robot=self.robot.name, control_dt=self.control_dt,
                            max_episode_steps=self.max_episode_steps, goal_conditioned=self.goal_conditioned,
                            image_shapes={c.name: c.shape for c in self.cameras})
        self._renderers: dict = {}
        self.reset()

    def _image_cameras(self, groups: set[str]) -> list[CameraSpec]:
        """The CameraSpecs of `cfg.image_observations` (robot.yaml's cameras, then the task's)."""
        declared = {c.name: c for c in (*self.robot.cameras, *self.cfg.cameras)}
        out = []
        for name in self.cfg.image_observations:
            if name not in declared:
                raise ConfigError("env.image_observations", f"no camera {name!r}: declare it in robot.yaml's "
                                  f"cameras or the task's env.cameras (declared: {', '.join(declared) or 'none'})")
            if name in groups:
                raise ConfigError("env.image_observations", f"camera {name!r} has the name of an observation group")
            out.append(declared[name])
        if len(set(self.cfg.image_observations)) != len(self.cfg.image_observations):
            raise ConfigError("env.image_observations", f"names a camera twice: {list(self.cfg.image_observations)}")
        return out

    # ----- helpers for tasks -----
    def _jid(self, name: str) -> int:
        jid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if jid < 0:
            raise ValueError(f"{self.robot.name}: no joint {name!r} in the model")
        return jid

    def sensor(self, name: str) -> torch.Tensor:
        return self.sensordata[:, self._sensor_slices[name]]

    def rand(self, *shape: int, low: float | torch.Tensor = 0.0, high: float | torch.Tensor = 1.0) -> torch.Tensor:
        u = torch.rand(*shape, generator=self.generator, device=self.device)
        return low + (high - low) * u

    @property
    def joint_pos(self) -> torch.Tensor:
        return self.qpos[:, self.joint_qpos_idx]

    @property
    def joint_vel(self) -> torch.Tensor:
        return self.qvel[:, self.joint_qvel_idx]

    def _refresh(self) -> None:
        """Torch views of the simulation state: one host->device copy per step on the C backend,
        the live Warp arrays themselves (no copy) on the Warp backend."""
        self.qpos, self.qvel, self.sensordata = self.sim.torch_state(self.device)

    # ----- to be provided by tasks -----
    def _init_task_buffers(self) -> None:
        """Hook: allocate task state (commands, goals) before observations are evaluated."""

    def _action_mapping(self) -> ActionMapping:
        """Hook: the task's action mapping (`roboreal.control.action`), usually
        ``ActionMapping.for_robot(self.robot, type, scale)``, which fills the joints, the
        default-pose offset and the margin bounds from the robot spec. `_action_to_ctrl`
        applies it with ``self.action_mapping.to_command``; the bundle writes its `to_dict`."""
        raise NotImplementedError

    def _action_size(self) -> int:
        return self.action_mapping.size

    def _action_type(self) -> str:
        return "continuous"

    def _action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        raise NotImplementedError

    def _readings(self) -> dict[str, Callable[[], torch.Tensor]]:
        """Where the env takes each observation reading (`roboreal.control.observation`) from:
        name -> a getter of the (N, k) tensor. Tasks extend it with their own (commands, goals,
        tracked objects); ``joint_pos[J]`` / ``joint_vel[J]`` are found by joint name."""
        readers = {"joint_pos": lambda: self.joint_pos, "joint_vel": lambda: self.joint_vel,
                   "last_action": lambda: self.actions}
        if self.robot.sites.imu:  # the sensors on the IMU site (MuJoCo framequat: w, x, y, z)
            imu = imu_sensor_slices(self.model, self.robot)
            readers["imu_quat_wxyz"] = lambda: self.sensordata[:, imu["quat"]]
            readers["imu_gyro"] = lambda: self.sensordata[:, imu["gyro"]]
        if self.robot.sites.end_effector:
            readers["ee_pos"] = lambda: self.site_position(self.robot.sites.end_effector)
        return readers

    def site_position(self, site: str) -> torch.Tensor:
        """World position (N, 3) of a model site from the current joint positions, by the shared
        forward kinematics (`roboreal.control.observation.SiteKinematics`) that the robot's
        observation builder runs on the measured joints (a site sensor lags by a physics step)."""
        cache = self.__dict__.setdefault("_site_kinematics", {})
        if site not in cache:
            fk = SiteKinematics(self.model, site)
            cache[site] = (fk, torch.tensor([int(self.model.jnt_qposadr[self._jid(j)]) for j in fk.joints],
                                            dtype=torch.long, device=self.device))
        fk, idx = cache[site]
        return fk.position(self.qpos[:, idx])

    def _terminations(self) -> dict[str, torch.Tensor]:
        return {}

    def _initial_state(self, env_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _reset_task(self, env_ids: torch.Tensor) -> None:
        pass

    def _post_physics_step(self) -> None:
        pass

    def _success(self) -> torch.Tensor | None:
        return None

    # ----- the contract -----
    def reset(self, seed: int | None = None) -> tuple[Obs, dict]:
        if seed is not None:
            self.generator.manual_seed(seed)
        self.tracker.reset_all()
        self.episode_reward_sums.zero_()
        self._reset_idx(torch.arange(self.num_envs, device=self.device))
        every = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return self._compute_observations(new_episode=every), {}

    def restart_episodes(self) -> None:
        """New episodes in every env from the current physics state (nothing is reset in the
        simulation): step counters, statistics and the task's per-episode sampling (commands,
        goals). sim2sim starts its episodes so once the safety chain's startup ramp is done."""
        ids = torch.arange(self.num_envs, device=self.device)
        self.tracker.reset_all()
        self.episode_reward_sums.zero_()
        self.episode_step.zero_()
        self._reset_task(ids)

    def _reset_idx(self, env_ids: torch.Tensor) -> None:
        ids_np = env_ids.cpu().numpy()
        qpos, qvel = self._initial_state(env_ids)
        self.randomizer.on_reset(ids_np)
        self.sim.reset_worlds(env_ids, qpos, qvel)
        self._refresh()
        self.episode_step[env_ids] = 0
        self.action_history[env_ids] = 0.0
        self.actions[env_ids] = 0.0
        self.last_actions[env_ids] = 0.0
        self._reset_task(env_ids)
        if self.camera_renderer is not None:
            self.camera_renderer.reset(ids_np)

    def _prepare_actions(self, actions: torch.Tensor) -> torch.Tensor:
        actions = torch.as_tensor(actions, device=self.device, dtype=torch.float32).reshape(self.num_envs, -1)
        # The contract: actions live in [-1, 1]; non-finite values are treated as 0.
        return torch.nan_to_num(actions, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)

    def step(self, actions: torch.Tensor, ctrl: np.ndarray | None = None):
        """The env contract's step. `ctrl` (sim2sim only): actuator controls per physics
        substep, (N, decimation, nu), that drive the physics instead of the task's mapping of
        `actions` (the deployed safety chain's commands, arriving with their latency);
        `actions` are then what the task records (last action, action-rate reward)."""
        actions = self._prepare_actions(actions)
        self.last_actions = self.actions
        self.actions = actions
        if self.max_latency > 0:
            self.action_history = torch.roll(self.action_history, 1, dims=1)
            self.action_history[:, 0] = actions
            latency = self.randomizer.values["action_latency"][:, 0].long()
            applied = self.action_history[torch.arange(self.num_envs, device=self.device), latency]
        else:
            applied = actions
        task_ctrl = self._action_to_ctrl(applied)
        self.sim.step(task_ctrl.detach() if ctrl is None else ctrl)
        self.sim_time += self.control_dt
        self._refresh()
        self.episode_step += 1
        self._post_physics_step()
        self._events()

        terms = self._terminations()
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        for v in terms.values():
            terminated |= v
        truncated = (self.episode_step >= self.max_episode_steps) & ~terminated
        self.terminated = terminated  # read by the `termination` reward term
        self.termination_terms = terms  # per env, for tools that ask why an episode ended (info has the means)
        reward, reward_terms = self._compute_reward()
        obs = self._compute_observations()
        success = self._success()
        done = terminated | truncated
        stats = self.tracker.update(reward, done, success)
        info: dict = {"reward_terms": reward_terms,
                      "terminations": {k: v.float().mean() for k, v in terms.items()}}
        if success is not None:
            info["is_success"] = success
        if done.any():
            ids = done.nonzero(as_tuple=False).squeeze(-1)
            info["final_observation"] = obs  # fresh tensors; the reset envs' rows are written into copies below
            stats["reward_terms"] = {n: self.episode_reward_sums[ids, i].clone()
                                     for i, n in enumerate(self.reward_names)}
            self.episode_reward_sums[ids] = 0.0
            self._reset_idx(ids)
            fresh = self._compute_observations(images=False, new_episode=done)
            fresh.update(self._images(ids))
            obs = {k: v.clone() for k, v in obs.items()}
            for k in obs:  # only the reset envs get new observations
                obs[k][ids] = fresh[k] if k in self.spec.image_shapes else fresh[k][ids]
        else:
            info["final_observation"] = obs
        info["episode"] = stats
        return obs, reward, terminated, truncated, info

    def _reward_termination(self) -> torch.Tensor:
        # 1 on the step an episode ends early (not at the time limit); any task can weight it
        return self.terminated.float()

    def _compute_reward(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reward = torch.zeros(self.num_envs, device=self.device)
        logged = {}
        scale = self.control_dt if self.cfg.reward_dt_scaled else 1.0
        for i, name in enumerate(self.reward_names):
            value = getattr(self, f"_reward_{name}")() * (self.cfg.rewards[name] * scale)
            reward += value
            self.episode_reward_sums[:, i] += value
            logged[name] = value.mean()
        if self.cfg.only_positive_rewards:
            reward = reward.clamp(min=0.0)
        return reward, logged

    def _setup_observations(self) -> dict[str, int]:
        """Check that the env provides every reading its deployable terms need; the size of
        each group (and of each term, for the layout)."""
        self._readers = self._readings()
        for terms in self._obs_terms.values():
            for t in terms:
                for r in t.readings:
                    if r in self._readers:
                        continue
                    joint = single_joint(r)
                    if joint is None:
                        raise ObservationError(f"observation term {t.name!r} ({t.source}) needs the reading {r!r}, "
                                               f"which {self.task_name} does not provide")
                    field, name = joint
                    jid = self._jid(name)
                    adr = int(self.model.jnt_qposadr[jid] if field == "pos" else self.model.jnt_dofadr[jid])
                    self._readers[r] = ((lambda a=adr: self.qpos[:, a:a + 1]) if field == "pos"
                                        else (lambda a=adr: self.qvel[:, a:a + 1]))
        readings = Readings(self._readers)
        frame_sizes = {g: [int(v.shape[-1]) for v in self._term_values(g, readings, noise=False)]
                       for g in self._obs_terms}
        # terms with a history keep their last H finished values per env, newest first
        self._history = {f"{g}/{t.name}": torch.zeros(self.num_envs, t.history, k, device=self.device)
                         for g in self._obs_terms for t, k in zip(self._obs_terms[g], frame_sizes[g]) if t.history > 1}
        self._term_sizes = {g: [k * t.history for t, k in zip(self._obs_terms[g], frame_sizes[g])]
                            for g in self._obs_terms}
        return {g: sum(s) for g, s in self._term_sizes.items()}

    def _term_values(self, group: str, readings: Readings, noise: bool) -> list[torch.Tensor]:
        """Finished values (offset, noise, scale, clip) of a group's terms, in order."""
        noise_cfg = self.cfg.observation_noise if (noise and group in NOISY_GROUPS) else None
        out = []
        for t in self._obs_terms[group]:
            v = raw_value(t, readings) if t.fn is None else t.fn()
            n = noise_cfg.get(t.name, 0.0) if noise_cfg else 0.0
            # training noise is added after the offset, before scale (as a sensor error in physical units)
            out.append(finish(v, t, self.default_joint_pos,
                              self.rand(*v.shape, low=-n, high=n) if n > 0 else None))
        return out

    def _stacked_values(self, group: str, readings: Readings, new_episode: torch.Tensor | None) -> list[torch.Tensor]:
        """A group's finished values with each history term's last H values stacked (one
        control step pushed into its buffer; `new_episode` (N,) bool rows filled instead)."""
        values = self._term_values(group, readings, noise=True)
        for i, t in enumerate(self._obs_terms[group]):
            if t.history > 1:
                buffer = self._history[f"{group}/{t.name}"]
                if new_episode is None:  # a control step: every env's history moves on
                    values[i] = stack_history(buffer, values[i])
                else:  # only the new episodes' histories restart; the others keep this step's
                    values[i] = fill_history(buffer, values[i], new_episode)
        return values

    def _compute_observations(self, images: bool = True, new_episode: torch.Tensor | None = None) -> Obs:
        """The observation groups (and images). `new_episode` (N,) bool: called right after those
        envs were reset; their history terms restart from this value, the others' are kept."""
        readings = Readings(self._readers)  # each reading taken once, shared by all groups
        obs = {group: torch.cat(self._stacked_values(group, readings, new_episode), dim=-1)
               for group in self._obs_terms}
        if self.goal_conditioned:
            obs["policy"] = torch.cat([obs["observation"], obs["desired_goal"]], dim=-1)
        if images:
            obs.update(self._images())
        return obs

    def _images(self, env_ids: torch.Tensor | None = None) -> Obs:
        """The camera images of `env_ids` (default: every env), uint8 (n, C, H, W) per camera."""
        if self.camera_renderer is None:
            return {}
        ids = None if env_ids is None else env_ids.cpu().numpy()
        return {k: torch.from_numpy(v).to(self.device) for k, v in self.camera_renderer.render(ids).items()}

    def _layout_groups(self, group: str) -> list[str]:
        return ["observation", "desired_goal"] if (self.goal_conditioned and group == "policy") else [group]

    def observation_terms(self, group: str = "policy", noise: bool = False) -> dict[str, torch.Tensor]:
        """Each term of `group` by name: the (N, k) value the policy sees (after offset, scale and
        clip; observation noise only if `noise`), from the current simulation state -- for a term
        with a history, its newest value. What the robot's `ObservationBuilder.term_values` must
        equal for the same state."""
        readings = Readings(self._readers)
        out = {}
        for g in self._layout_groups(group):
            for t, v in zip(self._obs_terms[g], self._term_values(g, readings, noise=noise)):
                out[t.name] = v.clone()
        return out

    def _events(self) -> None:
        self.randomizer.on_time(self.sim_time)
        if self._push_next is not None and self.sim_time >= self._push_next and self.has_free_base:
            push = self.cfg.randomization.push
            vmax = torch.tensor(push.max_velocity, device=self.device)
            kick = self.rand(self.num_envs, 2, low=-vmax, high=vmax)
            self.sim.add_to_qvel(slice(0, 2), kick)
            self._push_next += push.interval_s
            self._refresh()

    # ----- observation term details for export -----
    def observation_layout(self, group: str = "policy") -> list[dict]:
        """Ordered terms of an observation group: name, size (history x values per step), the
        term's properties (source, scale, clip, offset, wrap, relative_to, history) and its
        training noise."""
        out = []
        for g in self._layout_groups(group):
            for t, size in zip(self._obs_terms[g], self._term_sizes[g]):
                out.append({"name": t.name, "size": size, **t.properties(),
                            "noise": self.cfg.observation_noise.get(t.name, 0.0)})
        return out

    # ----- rendering -----
    def _render_setup(self, data: mujoco.MjData, env_id: int) -> None:
        """Hook: e.g. move a goal marker (mocap body) before rendering."""

    def render(self, env_id: int = 0, width: int = 320, height: int = 240, camera: str | None = None) -> np.ndarray:
        key = (env_id if self.sim.per_world else -1, width, height)
        if key not in self._renderers:
            model = self.sim.model_of(env_id)
            self._renderers[key] = (mujoco.Renderer(model, height, width), mujoco.MjData(model))
        renderer, data = self._renderers[key]
        self.sim.data_for(env_id, data)
        self._render_setup(data, env_id)
        mujoco.mj_forward(self.sim.model_of(env_id), data)
        cam = camera if camera is not None else ("track" if mujoco.mj_name2id(
            self.model, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0 else -1)
        renderer.update_scene(data, camera=cam)
        return renderer.render()

    def close(self) -> None:
        if self.camera_renderer is not None:
            self.camera_renderer.close()
            self.camera_renderer = None
        for renderer, _ in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self.sim.close()
