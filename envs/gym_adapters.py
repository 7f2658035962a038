"""Gymnasium interop, both ways.

- `GymEnv`: one roboreal env as a `gymnasium.Env` (numpy in/out; passes
  `gymnasium.utils.env_checker`). `register_gymnasium()` registers every task as
  ``roboreal/<task>-v0`` so ``gymnasium.make("roboreal/panda-reach-v0")`` works.
- `GymVectorEnv`: a batched roboreal env as a `gymnasium.vector.VectorEnv` (same-step
  autoreset, final observations in ``info["final_obs"]``).
- `make_sb3_vec_env`: a batched roboreal env as a Stable-Baselines3 `VecEnv`, so SB3
  can train on it (and benchmarks can compare against SB3 on equal terms).
- `GymnasiumBatchedEnv`: any Gymnasium env id or vector env wrapped into the roboreal
  batched contract, so roboreal agents train on standard tasks (``make("gym:HalfCheetah-v5")``).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from roboreal.envs.core import BatchedEnv, EnvSpec, EpisodeTracker

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


@contextlib.contextmanager
def _without_settotalmass_warning() -> Iterator[None]:
    """Drop MuJoCo's ``settotalmass`` deprecation warning while Gymnasium builds its envs.

    Gymnasium's own MJCFs (half_cheetah.xml, ...) set ``<compiler settotalmass>``, which
    MuJoCo >= 4 compiles with a deprecation warning per env (64 identical lines for 64 envs)
    that only Gymnasium can act on. It is MuJoCo's C warning (``mju_warning``), not a Python
    warning, so `warnings.filterwarnings` cannot see it: a user warning handler that drops
    exactly this message and passes every other one on (to a handler already set, else to
    stderr as MuJoCo's default handler prints it) is installed for the construction only.
    """
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(msg: str) -> None:
        if "settotalmass" in msg and "deprecated" in msg:
            return
        if previous is not None:
            previous(msg)
        else:
            print(f"WARNING: {msg}\n", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _box(size: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)


def _spaces_of(spec: EnvSpec) -> tuple[spaces.Space, spaces.Space]:
    if spec.goal_conditioned:
        obs_space = spaces.Dict({k: _box(spec.observation_sizes[k]) for k in GOAL_KEYS})
    else:
        obs_space = _box(spec.observation_sizes["policy"])
    if spec.action_type == "discrete":
        act_space = spaces.Discrete(spec.action_size)
    else:
        act_space = spaces.Box(-1.0, 1.0, shape=(spec.action_size,), dtype=np.float32)
    return obs_space, act_space


def _to_numpy_obs(obs: dict[str, torch.Tensor], goal: bool, index: Any = slice(None)) -> Any:
    if goal:
        return {k: obs[k][index].cpu().numpy() for k in GOAL_KEYS}
    return obs["policy"][index].cpu().numpy()


def _to_action_tensor(action: Any, spec: EnvSpec, num_envs: int) -> torch.Tensor:
    if spec.action_type == "discrete":
        return torch.as_tensor(np.asarray(action), dtype=torch.long).reshape(num_envs)
    return torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(num_envs, spec.action_size)


class GymEnv(gym.Env):
    """A single roboreal env (num_envs=1) as a Gymnasium env."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: str, render_mode: str | None = None, **make_kwargs: Any):
        from roboreal.envs.registry import make

        make_kwargs.pop("num_envs", None)
        self.env = make(task, num_envs=1, **make_kwargs)
        self.observation_space, self.action_space = _spaces_of(self.env.spec)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1 / self.env.spec.control_dt)}
        self._goal = self.env.spec.goal_conditioned

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.env.reset(seed=seed)
        return _to_numpy_obs(obs, self._goal, 0), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(_to_action_tensor(action, self.env.spec, 1))
        done = bool(terminated[0] or truncated[0])
        # The batched env already reset itself; Gymnasium expects the last observation.
        shown = info["final_observation"] if done else obs
        out_info = {}
        if "is_success" in info:
            out_info["is_success"] = bool(info["is_success"][0])
        return (_to_numpy_obs(shown, self._goal, 0), float(reward[0]), bool(terminated[0]), bool(truncated[0]),
                out_info)

    def compute_reward(self, achieved_goal, desired_goal, info):
        r = self.env.compute_reward(torch.as_tensor(achieved_goal, dtype=torch.float32),
                                    torch.as_tensor(desired_goal, dtype=torch.float32), None)
        return r.cpu().numpy()

    def render(self):
        if self.render_mode == "rgb_array":
            return self.env.render(0)
        return None

    def close(self):
        self.env.close()


def register_gymnasium() -> list[str]:
    """Register every roboreal task with Gymnasium as ``roboreal/<task>-v0``."""
    from roboreal.envs.registry import task_names

    ids = []
    for name in task_names():
        env_id = f"roboreal/{name}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=GymEnv, kwargs={"task": name}, disable_env_checker=True)
        ids.append(env_id)
    return ids


class GymVectorEnv(gym.vector.VectorEnv):
    """A batched roboreal env as a Gymnasium vector env (same-step autoreset)."""

    def __init__(self, env: BatchedEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space, self.single_action_space = _spaces_of(env.spec)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self._goal = env.spec.goal_conditioned

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, _ = self.env.reset(seed=seed)
        return _to_numpy_obs(obs, self._goal), {}

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(_to_action_tensor(actions, self.env.spec, self.num_envs))
        done = (terminated | truncated).cpu().numpy()
        out_info: dict[str, Any] = {}
        if done.any():
            out_info["final_obs"] = np.array([None] * self.num_envs, dtype=object)
            final = _to_numpy_obs(info["final_observation"], self._goal)
            for i in np.flatnonzero(done):
                out_info["final_obs"][i] = {k: v[i] for k, v in final.items()} if self._goal else final[i]
            out_info["_final_obs"] = done
        if "is_success" in info:
            out_info["is_success"] = info["is_success"].cpu().numpy()
        return (_to_numpy_obs(obs, self._goal), reward.cpu().numpy(), terminated.cpu().numpy(),
                truncated.cpu().numpy(), out_info)

    def close_extras(self, **kwargs):
        self.env.close()


def make_sb3_vec_env(task: str | BatchedEnv, num_envs: int = 1, **make_kwargs: Any):
    """A batched roboreal env as a Stable-Baselines3 VecEnv (needs the `dev` extra)."""
    from stable_baselines3.common.vec_env import VecEnv

    from roboreal.envs.registry import make

    env = task if isinstance(task, BatchedEnv) else make(task, num_envs=num_envs, **make_kwargs)
    obs_space, act_space = _spaces_of(env.spec)
    goal = env.spec.goal_conditioned

    class RoborealSB3VecEnv(VecEnv):
        def __init__(self):
            super().__init__(env.num_envs, obs_space, act_space)
            self.env = env
            self._actions = None

        def reset(self):
            obs, _ = env.reset(seed=self._seeds[0] if getattr(self, "_seeds", None) else None)
            self._reset_seeds()
            return _to_numpy_obs(obs, goal)

        def step_async(self, actions):
            self._actions = actions

        def step_wait(self):
            obs, reward, terminated, truncated, info = env.step(_to_action_tensor(self._actions, env.spec,
                                                                                  env.num_envs))
            done = (terminated | truncated).cpu().numpy()
            final = _to_numpy_obs(info["final_observation"], goal)
            succ = info["is_success"].cpu().numpy() if "is_success" in info else None
            trunc = truncated.cpu().numpy()
            infos: list[dict] = [{} for _ in range(env.num_envs)]
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = {k: v[i] for k, v in final.items()} if goal else final[i]
                infos[i]["TimeLimit.truncated"] = bool(trunc[i])
                if succ is not None:
                    infos[i]["is_success"] = bool(succ[i])
            return _to_numpy_obs(obs, goal), reward.cpu().numpy(), done, infos

        def close(self):
            env.close()

        def get_attr(self, attr_name, indices=None):
            if attr_name == "render_mode":
                return [None] * env.num_envs
            return [getattr(env, attr_name)] * len(self._get_indices(indices))

        def set_attr(self, attr_name, value, indices=None):
            setattr(env, attr_name, value)

        def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
            if method_name == "compute_reward":
                ag, dg, info = method_args[:3] if method_args else (method_kwargs["achieved_goal"],
                                                                     method_kwargs["desired_goal"], None)
                r = env.compute_reward(torch.as_tensor(ag, dtype=torch.float32),
                                       torch.as_tensor(dg, dtype=torch.float32), info)
                return [r.cpu().numpy()]
            return [getattr(env, method_name)(*method_args, **method_kwargs)]

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * len(self._get_indices(indices))

    return RoborealSB3VecEnv()


class GymnasiumBatchedEnv(BatchedEnv):
    """Any Gymnasium env (by id, or a vector env) behind the roboreal batched contract."""

    def __init__(self, env_id: str | gym.vector.VectorEnv, num_envs: int = 1, device: str = "cpu", seed: int = 0,
                 vectorization: str = "sync", **gym_kwargs: Any):
        if isinstance(env_id, str):
            if env_id not in gym.registry:
                from roboreal.config import ConfigError

                raise ConfigError("task", f"unknown Gymnasium env id {env_id!r}")
            with _without_settotalmass_warning():  # once per construction, not per env
                self.venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vectorization,
                                         vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **gym_kwargs)
            name = env_id
        else:
            self.venv = env_id
            name = getattr(env_id.spec, "id", type(env_id).__name__) if env_id.spec else type(env_id).__name__
            if env_id.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
                raise ValueError("wrap a Gymnasium vector env created with autoreset_mode=AutoresetMode.SAME_STEP")
        self.num_envs = self.venv.num_envs
        self.device = torch.device(device)
        self.seed = seed
        obs_space = self.venv.single_observation_space
        act_space = self.venv.single_action_space
        goal = isinstance(obs_space, spaces.Dict) and all(k in obs_space.spaces for k in GOAL_KEYS)
        if goal:
            sizes = {k: int(np.prod(obs_space[k].shape)) for k in GOAL_KEYS}
            sizes["policy"] = sizes["observation"] + sizes["desired_goal"]
        elif isinstance(obs_space, spaces.Box):
            sizes = {"policy": int(np.prod(obs_space.shape))}
        else:
            raise ValueError(f"{name}: observation space {obs_space} is not supported (Box or goal Dict)")
        if isinstance(act_space, spaces.Discrete):
            action_type, action_size = "discrete", int(act_space.n)
        elif isinstance(act_space, spaces.Box):
            action_type, action_size = "continuous", int(np.prod(act_space.shape))
            self._low = act_space.low.astype(np.float32).reshape(-1)
            self._high = act_space.high.astype(np.float32).reshape(-1)
            if not (np.isfinite(self._low).all() and np.isfinite(self._high).all()):
                raise ValueError(f"{name}: unbounded Box actions cannot be mapped from [-1, 1]")
        else:
            raise ValueError(f"{name}: action space {act_space} is not supported (Box or Discrete)")
        max_steps = getattr(getattr(self.venv, "spec", None), "max_episode_steps", None) or 1000
        self.spec = EnvSpec(task=f"gym:{name}", observation_sizes=sizes, action_size=action_size,
                            action_type=action_type, control_dt=1.0 / self.venv.metadata.get("render_fps", 50),
                            max_episode_steps=int(max_steps), goal_conditioned=goal)
        self.tracker = EpisodeTracker(self.num_envs, self.device)
        self._seeded = False

    def _obs(self, raw: Any) -> dict[str, torch.Tensor]:
        def t(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).reshape(self.num_envs, -1)

        if self.spec.goal_conditioned:
            obs = {k: t(raw[k]) for k in GOAL_KEYS}
            obs["policy"] = torch.cat([obs["observation"], obs["desired_goal"]], dim=-1)
            return obs
        return {"policy": t(raw)}

    def reset(self, seed: int | None = None):
        if seed is None and not self._seeded:
            seed = self.seed
        self._seeded = True
        raw, _ = self.venv.reset(seed=seed)
        self.tracker.reset_all()
        return self._obs(raw), {}

    def step(self, actions: torch.Tensor):
        if self.spec.action_type == "discrete":
            a = torch.as_tensor(actions).reshape(self.num_envs).cpu().numpy().astype(np.int64)
        else:
            a = torch.as_tensor(actions, dtype=torch.float32).reshape(self.num_envs, -1).cpu().numpy()
            a = np.clip(np.nan_to_num(a), -1.0, 1.0)
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        raw, reward, terminated, truncated, info = self.venv.step(a)
        obs = self._obs(raw)
        reward_t = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device)
        term_t = torch.as_tensor(np.asarray(terminated), device=self.device)
        trunc_t = torch.as_tensor(np.asarray(truncated), device=self.device) & ~term_t
        done = term_t | trunc_t
        final = {k: v.clone() for k, v in obs.items()}
        if "final_obs" in info:
            for i in np.flatnonzero(info.get("_final_obs", done.cpu().numpy())):
                one = self._obs_single(info["final_obs"][i])
                for k in final:
                    final[k][i] = one[k]
        success = None
        if "is_success" in info:
            success = torch.as_tensor(np.asarray(info["is_success"], dtype=bool), device=self.device)
        out = {"final_observation": final, "episode": self.tracker.update(reward_t, done, success),
               "reward_terms": {}}
        if success is not None:
            out["is_success"] = success
        return obs, reward_t, term_t, trunc_t, out

    def _obs_single(self, raw: Any) -> dict[str, torch.Tensor]:
        def t(x):
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).reshape(-1)

        if self.spec.goal_conditioned:
            obs = {k: t(raw[k]) for k in GOAL_KEYS}
            obs["policy"] = torch.cat([obs["observation"], obs["desired_goal"]])
            return obs
        return {"policy": t(raw)}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        base = self.venv.envs[0].unwrapped if hasattr(self.venv, "envs") else None
        if base is None or not hasattr(base, "compute_reward"):
            raise NotImplementedError(f"{self.spec.task} has no compute_reward")
        r = base.compute_reward(achieved_goal.cpu().numpy(), desired_goal.cpu().numpy(), info)
        return torch.as_tensor(np.asarray(r, dtype=np.float32), device=self.device)

    def render(self, env_id: int = 0, width: int = 320, height: int = 240, camera: str | None = None):
        if hasattr(self.venv, "envs"):
            return self.venv.envs[env_id].render()
        raise NotImplementedError

    def close(self):
        self.venv.close()
