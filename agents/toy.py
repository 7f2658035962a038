"""Tiny pure-torch batched envs that follow the env contract, for tests and examples.

- `CounterEnv`: observation = the step count of the episode; reward 1 per step; time-out
  after ``episode_steps``; optionally terminates when a given step is reached. Its
  final observation differs from the auto-reset one, which makes time-out
  bootstrapping checkable by hand.
- `PointGoalEnv`: a 2-D point that moves towards a goal (goal-conditioned, sparse
  ``-1/0`` or dense ``-distance`` reward, time-outs only) with a vectorized
  ``compute_reward``; learnable with SAC + HER in seconds.
- `SignBanditEnv`: one-step episodes; observation ``x ~ U(-1, 1)``, reward ``a * sign(x)``
  (the best action is ``sign(x)``); checks that online learning moves a policy beyond the
  actions a dataset holds.
"""

from __future__ import annotations

import torch

from roboreal.envs.core import BatchedEnv, EnvSpec, EpisodeTracker


class _ToyEnv(BatchedEnv):
    def __init__(self, num_envs: int, device: str | torch.device = "cpu", seed: int = 0):
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.tracker = EpisodeTracker(self.num_envs, self.device)
        self.episode_step = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    def _obs(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _reset_idx(self, ids: torch.Tensor) -> None:
        self.episode_step[ids] = 0

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.generator.manual_seed(seed)
        self.tracker.reset_all()
        self._reset_idx(torch.arange(self.num_envs, device=self.device))
        return self._obs(), {}

    def _finish(self, reward, terminated, truncated, success=None):
        obs = self._obs()
        done = terminated | truncated
        info: dict = {"reward_terms": {"total": reward.mean()}, "episode": self.tracker.update(reward, done, success)}
        if success is not None:
            info["is_success"] = success
        info["final_observation"] = {k: v.clone() for k, v in obs.items()}
        if done.any():
            ids = done.nonzero(as_tuple=False).squeeze(-1)
            self._reset_idx(ids)
            fresh = self._obs()
            for k in obs:
                obs[k][ids] = fresh[k][ids]
        return obs, reward, terminated, truncated, info

    # exact resume support (see roboreal.agents.env_state)
    def state_dict(self) -> dict:
        state = {k: v.clone() for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        state["generator"] = self.generator.get_state()
        state["tracker"] = [self.tracker.returns.clone(), self.tracker.lengths.clone()]
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k == "generator":
                self.generator.set_state(v)
            elif k == "tracker":
                self.tracker.returns.copy_(v[0])
                self.tracker.lengths.copy_(v[1])
            else:
                setattr(self, k, v.clone())


class CounterEnv(_ToyEnv):
    """obs["policy"] = [step count]; reward 1; truncated at ``episode_steps``; terminated at ``terminate_at``."""

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", seed: int = 0, episode_steps: int = 3,
                 terminate_at: int | None = None, action_size: int = 1):
        super().__init__(num_envs, device, seed)
        self.episode_steps = episode_steps
        self.terminate_at = terminate_at
        self.spec = EnvSpec(task="toy-counter", observation_sizes={"policy": 1}, action_size=action_size,
                            max_episode_steps=episode_steps)

    def _obs(self):
        return {"policy": self.episode_step.float()[:, None]}

    def step(self, actions):
        self.episode_step += 1
        reward = torch.ones(self.num_envs, device=self.device)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if self.terminate_at is not None:
            terminated = self.episode_step >= self.terminate_at
        truncated = (self.episode_step >= self.episode_steps) & ~terminated
        return self._finish(reward, terminated, truncated)


class PointGoalEnv(_ToyEnv):
    """Move a point in [-1, 1]^2 to a goal: ``pos += max_step * action``; success within ``threshold``."""

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", seed: int = 0, episode_steps: int = 20,
                 sparse: bool = True, threshold: float = 0.1, max_step: float = 0.2):
        super().__init__(num_envs, device, seed)
        self.episode_steps, self.sparse, self.threshold, self.max_step = episode_steps, sparse, threshold, max_step
        self.pos = torch.zeros(self.num_envs, 2, device=self.device)
        self.goal = torch.zeros(self.num_envs, 2, device=self.device)
        self.spec = EnvSpec(task="toy-point-goal", observation_sizes={"policy": 4, "observation": 2,
                                                                      "achieved_goal": 2, "desired_goal": 2},
                            action_size=2, max_episode_steps=episode_steps, goal_conditioned=True)

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, 2, generator=self.generator, device=self.device) * 2.0 - 1.0

    def _reset_idx(self, ids):
        super()._reset_idx(ids)
        self.pos[ids] = self._rand(len(ids))
        self.goal[ids] = self._rand(len(ids))

    def _obs(self):
        return {"policy": torch.cat([self.pos, self.goal], -1), "observation": self.pos.clone(),
                "achieved_goal": self.pos.clone(), "desired_goal": self.goal.clone()}

    def compute_reward(self, achieved_goal, desired_goal, info=None):
        d = torch.linalg.norm(achieved_goal - desired_goal, dim=-1)
        return -(d > self.threshold).float() if self.sparse else -d

    def step(self, actions):
        a = torch.as_tensor(actions, device=self.device).reshape(self.num_envs, 2).clamp(-1, 1)
        self.pos = (self.pos + self.max_step * a).clamp(-1.0, 1.0)
        self.episode_step += 1
        reward = self.compute_reward(self.pos, self.goal)
        success = torch.linalg.norm(self.pos - self.goal, dim=-1) <= self.threshold
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = self.episode_step >= self.episode_steps
        return self._finish(reward, terminated, truncated, success)


class SignBanditEnv(_ToyEnv):
    """obs["policy"] = [x], x ~ U(-1, 1) drawn at every reset; reward ``a * sign(x)``; every step terminates."""

    def __init__(self, num_envs: int = 1, device: str | torch.device = "cpu", seed: int = 0):
        super().__init__(num_envs, device, seed)
        self.x = torch.zeros(self.num_envs, device=self.device)
        self.spec = EnvSpec(task="toy-sign-bandit", observation_sizes={"policy": 1}, action_size=1,
                            max_episode_steps=1)

    def _reset_idx(self, ids: torch.Tensor) -> None:
        super()._reset_idx(ids)
        self.x[ids] = torch.rand(len(ids), generator=self.generator, device=self.device) * 2 - 1

    def _obs(self):
        return {"policy": self.x[:, None].clone()}

    def step(self, actions):
        reward = actions.reshape(self.num_envs).clamp(-1, 1) * torch.sign(self.x)
        terminated = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        return self._finish(reward, terminated, torch.zeros_like(terminated))
