"""What every algorithm shares: the runner-facing interface, episode bookkeeping,
the policy-export description and the (optional) torch.distributed context.

An algorithm owns its env and the current observation. The runner calls
``iteration()`` repeatedly (one collection + update phase; returns scalar metrics),
drains finished episodes with ``pop_episodes()``, and checkpoints with
``state_dict()`` / ``load_state_dict()`` (plain tensors, numbers, lists and dicts only,
so checkpoints load with ``torch.load(weights_only=True)``).

``policy_state()`` describes the deterministic actor for export: a policy ``kind``
registered in `roboreal.agents.registry` (which `roboreal.agents.policy.build_policy`
rebuilds), the observation group it reads, sizes, the constructor arguments and the
weights (normalizer included). A new algorithm subclasses `Algorithm` and is registered
there (agents/README.md, "Adding an algorithm").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from roboreal.envs.core import BatchedEnv

Obs = dict[str, torch.Tensor]


@dataclass
class DistContext:
    """Data-parallel context. ``enabled`` is False for a single process."""

    rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t)
            t /= self.world_size
        return t

    def average_gradients(self, params) -> None:
        """All-reduce and average the gradients of `params` (one flat buffer, one collective)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


class Algorithm:
    name = ""

    def __init__(self, env: BatchedEnv, cfg: Any, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        self.env = env
        self.cfg = cfg
        self.device = torch.device(device)
        self.total_steps = int(total_steps)
        self.dist = dist or DistContext()
        self.num_envs = env.num_envs
        self.global_step = 0  # env steps (transitions) collected by this process
        self._episodes: list[dict] = []

    # ----- the runner-facing interface -----
    def iteration(self) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self, include_replay: bool = True) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def policy_state(self) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def act_deterministic(self, obs: Obs) -> torch.Tensor:
        raise NotImplementedError

    # ----- shared helpers -----
    def step_env(self, actions: torch.Tensor):
        """Step the env and remember the statistics of the episodes that ended."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.global_step += self.num_envs
        ep = info.get("episode") or {}
        if "return" in ep and len(ep["return"]) > 0:
            self._episodes.append(ep)
        return obs, reward, terminated, truncated, info

    def pop_episodes(self) -> dict:
        """Finished episodes since the last call: ``return``, ``length``, optional ``success`` and
        ``reward_terms`` {name: per-episode sums}, concatenated as 1-D CPU tensors."""
        eps, self._episodes = self._episodes, []
        out: dict = {}
        if not eps:
            return out
        for key in ("return", "length", "success"):
            vals = [e[key].reshape(-1).float().cpu() for e in eps if key in e]
            if vals:
                out[key] = torch.cat(vals)
        terms: dict[str, list] = {}
        for e in eps:
            for name, v in (e.get("reward_terms") or {}).items():
                terms.setdefault(name, []).append(v.reshape(-1).float().cpu())
        out["reward_terms"] = {k: torch.cat(v) for k, v in terms.items()}
        return out


def obs_to(obs: Obs, device: torch.device) -> Obs:
    return {k: v.to(device) for k, v in obs.items()}
