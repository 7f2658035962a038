"""The batched env contract every roboreal agent trains on.

A batched env steps `num_envs` environments at once with torch tensors:

- ``reset(seed=None) -> (obs, info)``
- ``step(actions) -> (obs, reward, terminated, truncated, info)``

``actions`` is ``(N, A)`` float in [-1, 1] (continuous) or ``(N,)`` int64 (discrete,
``action_type == "discrete"``). ``obs`` is a dict of named ``(N, k)`` float32 tensors:
``policy`` always, ``critic`` (privileged) optionally, and for goal tasks also
``observation``, ``achieved_goal`` and ``desired_goal``; and for tasks with cameras one
``(N, C, H, W)`` uint8 image per camera, keyed by the camera's name (``spec.image_shapes``).
``reward``, ``terminated``,
``truncated`` are ``(N,)``.

Done envs (terminated or truncated) are reset inside the same ``step``: the returned
``obs`` already belongs to the next episode, and the true last observation of the
finished episode is in ``info["final_observation"]`` (a dict like ``obs``, equal to
``obs`` for the envs that did not finish), so time-outs can be bootstrapped.

``info`` also carries ``"episode"`` (return/length/success of the episodes that ended
this step, as tensors), ``"reward_terms"`` (mean weighted value of each named reward
term this step) and, for goal tasks, ``"is_success"`` ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

Obs = dict[str, torch.Tensor]


@dataclass
class EnvSpec:
    """Static description of a batched env (sizes, timing, robot)."""

    task: str
    observation_sizes: dict[str, int]
    action_size: int  # continuous: A; discrete: number of actions
    action_type: str = "continuous"  # "continuous" | "discrete"
    robot: str | None = None
    control_dt: float = 0.02
    max_episode_steps: int = 1000
    goal_conditioned: bool = False
    image_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # camera -> (C, H, W) uint8
    extras: dict[str, Any] = field(default_factory=dict)


class BatchedEnv:
    """Base class of the contract (see module docstring)."""

    spec: EnvSpec
    num_envs: int
    device: torch.device

    def reset(self, seed: int | None = None) -> tuple[Obs, dict]:
        raise NotImplementedError

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        raise NotImplementedError

    def compute_reward(self, achieved_goal: torch.Tensor, desired_goal: torch.Tensor, info: dict | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{self.spec.task} is not a goal-conditioned task")

    def render(self, env_id: int = 0, width: int = 320, height: int = 240, camera: str | None = None):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EpisodeTracker:
    """Running return/length per env; reports finished episodes' statistics."""

    def __init__(self, num_envs: int, device: torch.device):
        self.returns = torch.zeros(num_envs, device=device)
        self.lengths = torch.zeros(num_envs, dtype=torch.long, device=device)

    def update(self, reward: torch.Tensor, done: torch.Tensor, success: torch.Tensor | None = None) -> dict:
        self.returns += reward
        self.lengths += 1
        stats: dict[str, torch.Tensor] = {}
        if done.any():
            stats["return"] = self.returns[done].clone()
            stats["length"] = self.lengths[done].clone()
            if success is not None:
                stats["success"] = success[done].float()
            self.returns[done] = 0.0
            self.lengths[done] = 0
        return stats

    def reset_all(self) -> None:
        self.returns.zero_()
        self.lengths.zero_()
