"""Storage for the agents: on-policy rollouts (PPO), replay on the training device (SAC, CrossQ,
DQN) and offline transitions plus online ones (IQL fine-tuning).

- `RolloutStorage` + `compute_gae`: a (T, N) rollout and generalized advantage
  estimation (Schulman et al. 2016). Time-out truncations are bootstrapped *before*
  GAE by the collector (PPO adds ``gamma * V(final_obs)`` to the reward of that step),
  so here every ``done`` (terminated or truncated) simply cuts the recursion.
- `ReplayBuffer`: a time-major (T, N) ring of transitions kept as tensors on the
  training device. Keeping each env's column in time order makes n-step returns
  (computed at sampling time) and hindsight relabeling (see `roboreal.agents.her`)
  plain indexing. ``next_obs`` is the *true* next observation (the env's
  ``final_observation`` at episode ends), and bootstrapping is cut only by
  ``terminated``: a time-out is not a terminal state (Pardo et al. 2018).
- `TransitionBuffer`: a dataset's flat transitions followed by room for online ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:
    from roboreal.agents.offline_data import OfflineData

Obs = dict[str, torch.Tensor]


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns (targets of the value function) of a (T, N) rollout.

    ``dones[t]`` means the episode ended at step t (``values[t+1]`` belongs to a new
    episode); ``last_values`` is V of the observation after the last step.
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_values)
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        last_gae = delta + gamma * lam * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


class RolloutStorage:
    """A PPO rollout: ``num_steps`` steps of ``num_envs`` envs (observations stored normalized).

    ``image_shapes`` {camera: (C, H, W)}: camera images kept as they come, uint8
    ``(T, N, C, H, W)`` (a float copy would be 4x the memory); minibatches index them."""

    def __init__(self, num_steps: int, num_envs: int, obs_sizes: dict[str, int], action_size: int,
                 device: torch.device, image_shapes: dict[str, tuple[int, int, int]] | None = None):
        T, N = num_steps, num_envs
        self.num_steps, self.num_envs = T, N
        self.obs = {k: torch.zeros(T, N, size, device=device) for k, size in obs_sizes.items()}
        self.images = {k: torch.zeros(T, N, *shape, dtype=torch.uint8, device=device)
                       for k, shape in (image_shapes or {}).items()}
        self.actions = torch.zeros(T, N, action_size, device=device)
        self.log_probs = torch.zeros(T, N, device=device)
        self.rewards = torch.zeros(T, N, device=device)
        self.dones = torch.zeros(T, N, device=device)
        self.values = torch.zeros(T, N, device=device)
        self.action_mean = torch.zeros(T, N, action_size, device=device)
        self.action_std = torch.zeros(T, N, action_size, device=device)
        self.advantages = torch.zeros(T, N, device=device)
        self.returns = torch.zeros(T, N, device=device)
        self.step = 0

    def add(self, obs: Obs, actions: torch.Tensor, log_probs: torch.Tensor, rewards: torch.Tensor,
            dones: torch.Tensor, values: torch.Tensor, action_mean: torch.Tensor, action_std: torch.Tensor,
            images: Obs | None = None) -> None:
        t = self.step
        if t >= self.num_steps:
            raise RuntimeError("rollout storage is full; call clear() after the update")
        for k in self.obs:
            self.obs[k][t] = obs[k]
        for k in self.images:
            self.images[k][t] = images[k]
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.rewards[t] = rewards
        self.dones[t] = dones.float()
        self.values[t] = values
        self.action_mean[t] = action_mean
        self.action_std[t] = action_std
        self.step += 1

    def compute_returns(self, last_values: torch.Tensor, gamma: float, lam: float) -> None:
        self.advantages, self.returns = compute_gae(self.rewards, self.values, self.dones, last_values, gamma, lam)

    def clear(self) -> None:
        self.step = 0

    def minibatches(self, num_minibatches: int) -> Iterator[dict]:
        """Shuffled minibatches over all T*N samples (uses the global torch RNG); with cameras,
        ``mb["images"]`` {camera: uint8 (B, C, H, W)}."""
        total = self.num_steps * self.num_envs
        size = total // num_minibatches
        perm = torch.randperm(total, device=self.actions.device)
        flat = {
            "obs": {k: v.reshape(total, -1) for k, v in self.obs.items()},
            "actions": self.actions.reshape(total, -1),
            "log_probs": self.log_probs.reshape(total),
            "values": self.values.reshape(total),
            "advantages": self.advantages.reshape(total),
            "returns": self.returns.reshape(total),
            "action_mean": self.action_mean.reshape(total, -1),
            "action_std": self.action_std.reshape(total, -1),
        }
        if self.images:
            flat["images"] = {k: v.reshape(total, *v.shape[2:]) for k, v in self.images.items()}  # views, uint8
        for i in range(num_minibatches):
            idx = perm[i * size:(i + 1) * size]
            yield {k: ({g: x[idx] for g, x in v.items()} if isinstance(v, dict) else v[idx]) for k, v in flat.items()}


class ReplayBuffer:
    """Time-major ring of transitions ``(T = capacity // num_envs, N)`` on the training device.

    ``sample(batch, n_step, gamma)`` returns n-step returns computed on the fly:
    ``R = sum_{k<m} gamma^k r_{t+k}`` where ``m <= n`` stops at the first episode end
    (terminated or truncated), the bootstrap observation is the true next observation
    of step ``t+m-1`` and ``discount = gamma^m * (1 - terminated_{t+m-1})``.
    """

    def __init__(self, capacity: int, num_envs: int, obs_sizes: dict[str, int], action_shape: tuple[int, ...],
                 device: torch.device, action_dtype: torch.dtype = torch.float32):
        self.num_envs = N = int(num_envs)
        self.rows = T = max(2, int(capacity) // N)
        self.device = torch.device(device)
        self.obs = {k: torch.zeros(T, N, s, device=device) for k, s in obs_sizes.items()}
        self.next_obs = {k: torch.zeros(T, N, s, device=device) for k, s in obs_sizes.items()}
        self.actions = torch.zeros(T, N, *action_shape, dtype=action_dtype, device=device)
        self.rewards = torch.zeros(T, N, device=device)
        self.terminated = torch.zeros(T, N, dtype=torch.bool, device=device)
        self.dones = torch.zeros(T, N, dtype=torch.bool, device=device)  # terminated | truncated
        self.steps_added = 0  # absolute number of add() calls (rows written)

    def __len__(self) -> int:
        return min(self.steps_added, self.rows) * self.num_envs

    @property
    def pos(self) -> int:
        return self.steps_added % self.rows

    @property
    def filled_rows(self) -> int:
        return min(self.steps_added, self.rows)

    def add(self, obs: Obs, actions: torch.Tensor, rewards: torch.Tensor, next_obs: Obs, terminated: torch.Tensor,
            truncated: torch.Tensor) -> None:
        p = self.pos
        for k in self.obs:
            self.obs[k][p] = obs[k]
            self.next_obs[k][p] = next_obs[k]
        self.actions[p] = actions.reshape(self.actions.shape[1:])
        self.rewards[p] = rewards
        self.terminated[p] = terminated.bool()
        self.dones[p] = terminated.bool() | truncated.bool()
        self.steps_added += 1

    def _sample_index(self, batch_size: int, n_step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows (slots), env ids and absolute step numbers of `batch_size` random transitions
        whose n-step window has been fully written."""
        valid = self.filled_rows - (n_step - 1)
        if valid <= 0:
            raise RuntimeError("replay buffer holds fewer steps than the n-step window")
        oldest = self.steps_added - self.filled_rows
        logical = torch.randint(0, valid, (batch_size,), device=self.device)
        env = torch.randint(0, self.num_envs, (batch_size,), device=self.device)
        absolute = oldest + logical
        return absolute % self.rows, env, absolute

    def sample(self, batch_size: int, n_step: int = 1, gamma: float = 0.99) -> dict:
        rows, env, absolute = self._sample_index(batch_size, n_step)
        ret = torch.zeros(batch_size, device=self.device)
        discount = torch.ones(batch_size, device=self.device)
        alive = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        end_rows = rows.clone()
        for k in range(n_step):
            r = (rows + k) % self.rows
            ret = ret + torch.where(alive, discount * self.rewards[r, env], torch.zeros_like(ret))
            end_rows = torch.where(alive, r, end_rows)
            discount = torch.where(alive, discount * gamma, discount)
            alive = alive & ~self.dones[r, env]
        discount = discount * (~self.terminated[end_rows, env]).float()
        return {
            "obs": {k: v[rows, env] for k, v in self.obs.items()},
            "actions": self.actions[rows, env],
            "rewards": ret,
            "next_obs": {k: v[end_rows, env] for k, v in self.next_obs.items()},
            "discounts": discount,  # gamma^m * (1 - terminated): multiply the bootstrap value by this
            "rows": rows, "env": env, "absolute": absolute,
        }

    # ----- checkpointing (plain tensors and ints) -----
    def state_dict(self) -> dict:
        return {"obs": self.obs, "next_obs": self.next_obs, "actions": self.actions, "rewards": self.rewards,
                "terminated": self.terminated, "dones": self.dones, "steps_added": self.steps_added}

    def load_state_dict(self, state: dict) -> None:
        for name in ("obs", "next_obs"):
            for k, v in getattr(self, name).items():
                v.copy_(state[name][k])
        for name in ("actions", "rewards", "terminated", "dones"):
            getattr(self, name).copy_(state[name])
        self.steps_added = int(state["steps_added"])


class TransitionBuffer:
    """The dataset's transitions followed by room for `extra` online ones; `IQL.sample` draws
    uniformly from the filled part (``len``)."""

    def __init__(self, data: OfflineData, extra: int):
        n = len(data)

        def grow(t: torch.Tensor) -> torch.Tensor:
            out = torch.zeros((n + extra, *t.shape[1:]), dtype=t.dtype)
            out[:n] = t
            return out

        self.obs, self.actions, self.rewards = grow(data.obs), grow(data.actions), grow(data.rewards)
        self.next_obs, self.terminals = grow(data.next_obs), grow(data.terminals)
        self.offline_size = self.size = n

    def __len__(self) -> int:
        return self.size

    def add(self, obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, next_obs: torch.Tensor,
            terminals: torch.Tensor) -> None:
        k = int(actions.shape[0])
        if self.size + k > self.actions.shape[0]:
            raise RuntimeError(f"TransitionBuffer full: {self.size} + {k} > {self.actions.shape[0]}")
        sl = slice(self.size, self.size + k)
        self.obs[sl], self.actions[sl], self.rewards[sl] = obs, actions, rewards
        self.next_obs[sl], self.terminals[sl] = next_obs, terminals
        self.size += k
