"""Hindsight Experience Replay (Andrychowicz et al. 2017) for batched goal envs.

`HerReplayBuffer` is a `ReplayBuffer` that also knows, for every stored transition,
where its episode starts and ends in its env's column (episodes are contiguous in the
time-major layout). When sampling, a fraction ``k / (k + 1)`` of the transitions gets
its goal replaced by an achieved goal of the *same* episode ("k relabels per real
transition" in the paper):

- ``future``: the achieved goal of a transition j >= t of the same episode (the goal
  reached at or after the next state);
- ``final``: the achieved goal at the end of the episode;
- ``episode``: the achieved goal of any transition of the episode.

The reward of a relabeled transition is recomputed with the env's vectorized
``compute_reward(achieved_goal_of_next_state, new_goal, None)``, and the new goal is
written into ``desired_goal`` of both the observation and the next observation.
Episodes that are still running use the latest stored transition as their end.

Termination flags are kept as stored: goal tasks that end an episode on success
should be used with care (a relabeled transition keeps the original flag); the
built-in goal tasks end on time-outs only, which are bootstrapped.
"""

from __future__ import annotations

from typing import Callable

import torch

from roboreal.agents.buffers import Obs, ReplayBuffer

STRATEGIES = ("future", "final", "episode")


class HerReplayBuffer(ReplayBuffer):
    def __init__(self, capacity: int, num_envs: int, obs_sizes: dict[str, int], action_shape: tuple[int, ...],
                 device: torch.device, compute_reward: Callable, strategy: str = "future", k: int = 4):
        for key in ("observation", "achieved_goal", "desired_goal"):
            if key not in obs_sizes:
                raise ValueError(f"HER needs the {key!r} observation group")
        if strategy not in STRATEGIES:
            raise ValueError(f"her.strategy: must be one of {list(STRATEGIES)}, got {strategy!r}")
        super().__init__(capacity, num_envs, obs_sizes, action_shape, device)
        self.compute_reward = compute_reward
        self.strategy = strategy
        self.k = int(k)
        self.relabel_prob = 1.0 - 1.0 / (1.0 + self.k)
        # Absolute step numbers of each stored transition's episode start / end (-1: still running).
        self.ep_start = torch.zeros(self.rows, num_envs, dtype=torch.long, device=self.device)
        self.ep_end = torch.full((self.rows, num_envs), -1, dtype=torch.long, device=self.device)
        self.current_start = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def add(self, obs: Obs, actions: torch.Tensor, rewards: torch.Tensor, next_obs: Obs, terminated: torch.Tensor,
            truncated: torch.Tensor) -> None:
        t, p = self.steps_added, self.pos
        self.ep_start[p] = self.current_start
        self.ep_end[p] = -1
        super().add(obs, actions, rewards, next_obs, terminated, truncated)
        done = (terminated.bool() | truncated.bool()).to(self.device)
        if done.any():
            envs = done.nonzero(as_tuple=False).squeeze(-1)
            lengths = (t - self.current_start[envs] + 1).clamp(max=self.rows)  # older rows were overwritten
            back = torch.arange(int(lengths.max()), device=self.device)[:, None]  # (L, 1)
            mask = back < lengths[None, :]
            rows = ((t - back) % self.rows).expand(-1, len(envs))
            self.ep_end[rows[mask], envs.expand_as(rows)[mask]] = t
            self.current_start[envs] = t + 1

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> dict:
        if n_step != 1:
            raise ValueError("HER relabeling is implemented for 1-step returns")
        batch = super().sample(batch_size, 1, gamma)
        rows, env, t = batch["rows"], batch["env"], batch["absolute"]
        relabel = torch.rand(batch_size, device=self.device) < self.relabel_prob
        latest = self.steps_added - 1
        oldest = self.steps_added - self.filled_rows
        end = self.ep_end[rows, env]
        end = torch.where(end < 0, torch.full_like(end, latest), end)
        u = torch.rand(batch_size, device=self.device)
        if self.strategy == "future":
            j = t + (u * (end - t + 1).float()).long().clamp(max=end - t)
        elif self.strategy == "final":
            j = end
        else:  # episode
            start = self.ep_start[rows, env].clamp(min=oldest)
            j = start + (u * (end - start + 1).float()).long().clamp(max=end - start)
        new_goal = self.next_obs["achieved_goal"][j % self.rows, env]
        goal = torch.where(relabel[:, None], new_goal, batch["obs"]["desired_goal"])
        batch["obs"]["desired_goal"] = goal
        batch["next_obs"]["desired_goal"] = goal
        relabeled_reward = self.compute_reward(batch["next_obs"]["achieved_goal"], goal, None).to(batch["rewards"])
        batch["rewards"] = torch.where(relabel, relabeled_reward, batch["rewards"])
        batch["relabeled"] = relabel
        batch["goal_index"] = j
        return batch

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(ep_start=self.ep_start, ep_end=self.ep_end, current_start=self.current_start)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.ep_start.copy_(state["ep_start"])
        self.ep_end.copy_(state["ep_end"])
        self.current_start.copy_(state["current_start"])
