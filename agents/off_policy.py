"""What the replay-based learners (SAC, CrossQ, DQN) share: the collect/learn loop and its checkpoint.

One iteration = ``steps_per_iteration`` steps of all envs. After each env step:

1. The transition goes into ``self.buffer`` (a `ReplayBuffer` on the training device) with the
   *true* next observation (``info["final_observation"]`` where an episode ended), so the
   target can bootstrap through time-outs (Pardo et al. 2018); only ``terminated`` cuts it.
2. Once `ready_to_learn` (by default: ``learning_starts`` transitions collected), the agent owes
   ``utd_ratio * num_envs`` gradient updates (the update-to-data ratio counts updates per
   collected transition; fractions carry over to the next step) and pays them with `update`.

A subclass builds its networks, optimizers and ``self.buffer``, sets ``self.groups`` (the
observation groups it stores) and calls `reset_env` last in its ``__init__``; it implements
`explore` (the behaviour action for ``self.obs``), `update` (one gradient step, returning
its metrics), `checkpoint_parts` and the runner-facing `act_deterministic` / `policy_state`.
Its config needs ``steps_per_iteration``, ``learning_starts`` and ``utd_ratio``.
"""

from __future__ import annotations

import torch
from torch import nn

from roboreal.agents.base import Algorithm, DistContext, Obs, obs_to
from roboreal.agents.buffers import ReplayBuffer
from roboreal.config import ConfigError
from roboreal.envs.core import BatchedEnv

# A checkpoint entry: a module or optimizer (saved with its own state_dict) or a bare tensor.
CheckpointPart = nn.Module | torch.optim.Optimizer | torch.Tensor

# What the loop keeps between iterations, besides the modules: saved under these keys, restored with these types.
LOOP_COUNTERS = {"global_step": int, "updates": int, "update_debt": float, "iterations": int}


class OffPolicyAlgorithm(Algorithm):
    buffer: ReplayBuffer
    groups: list[str]  # the observation groups stored in the replay buffer

    def __init__(self, env: BatchedEnv, cfg, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        super().__init__(env, cfg, device, total_steps, dist)
        if self.dist.enabled:
            raise ConfigError("algo", "data-parallel training is implemented for ppo only")
        self.updates = 0  # gradient updates so far
        self.update_debt = 0.0  # updates owed by the collected transitions, not yet done
        self.iterations = 0

    def reset_env(self) -> None:
        """The first observation (call once the networks exist: `observe` may use them)."""
        obs, _ = self.env.reset()
        self.obs = obs_to(obs, self.device)
        self.observe(self.obs)

    # ----- what a subclass supplies -----
    def explore(self) -> torch.Tensor:
        """The behaviour policy's actions for ``self.obs`` (N, ...)."""
        raise NotImplementedError

    def update(self) -> dict[str, float]:
        """One gradient step on a replay sample; its scalar metrics."""
        raise NotImplementedError

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        """Checkpoint key -> module, optimizer or tensor (the keys are the checkpoint format: keep them)."""
        raise NotImplementedError

    def observe(self, obs: Obs) -> None:
        """Called with every new observation (running normalizers update here)."""

    def ready_to_learn(self) -> bool:
        return self.global_step >= self.cfg.learning_starts

    def iteration_metrics(self) -> dict[str, float]:
        """Figures logged once per iteration besides the update means (``<name>/updates`` is added)."""
        return {}

    # ----- the loop -----
    def uniform_actions(self) -> torch.Tensor:
        """Uniform random continuous actions in [-1, 1] (the warm-up before learning starts)."""
        return torch.rand(self.num_envs, self.env.spec.action_size, device=self.device) * 2.0 - 1.0

    def iteration(self) -> dict[str, float]:
        cfg = self.cfg
        sums: dict[str, float] = {}
        n_updates = 0
        for _ in range(cfg.steps_per_iteration):
            actions = self.explore()
            next_obs, rewards, terminated, truncated, info = self.step_env(actions)
            real_next = obs_to(info.get("final_observation", next_obs), self.device)  # true next observation
            self.buffer.add({g: self.obs[g] for g in self.groups}, actions, rewards.to(self.device).float(),
                            {g: real_next[g] for g in self.groups}, terminated.to(self.device),
                            truncated.to(self.device))
            self.obs = obs_to(next_obs, self.device)
            self.observe(self.obs)
            if self.ready_to_learn():
                self.update_debt += cfg.utd_ratio * self.num_envs
                while self.update_debt >= 1.0:
                    for k, v in self.update().items():
                        sums[k] = sums.get(k, 0.0) + v
                    n_updates += 1
                    self.update_debt -= 1.0
        self.iterations += 1
        metrics = {k: v / n_updates for k, v in sums.items()} if n_updates else {}
        metrics.update(self.iteration_metrics())
        metrics[f"{self.name}/updates"] = float(self.updates)
        return metrics

    # ----- checkpointing (plain tensors and numbers: loads with weights_only=True) -----
    def state_dict(self, include_replay: bool = True) -> dict:
        """`checkpoint_parts`, the current observation, the loop counters and, with `include_replay`,
        the replay buffer."""
        state = {name: part.detach().clone() if isinstance(part, torch.Tensor) else part.state_dict()
                 for name, part in self.checkpoint_parts().items()}
        state["obs"] = self.obs
        state.update({k: getattr(self, k) for k in LOOP_COUNTERS})
        if include_replay:
            state["replay"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved (the replay buffer only if the checkpoint has it)."""
        for name, part in self.checkpoint_parts().items():
            if isinstance(part, torch.Tensor):
                with torch.no_grad():
                    part.copy_(state[name])
            else:
                part.load_state_dict(state[name])
        self.obs = obs_to(state["obs"], self.device)
        for k, cast in LOOP_COUNTERS.items():
            setattr(self, k, cast(state[k]))
        if "replay" in state:
            self.buffer.load_state_dict(state["replay"])
