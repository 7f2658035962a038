"""Deep Q-Network (Mnih et al. 2015) with the usual improvements, for discrete-action tasks.

The loop is `roboreal.agents.off_policy.OffPolicyAlgorithm`'s: one iteration =
``steps_per_iteration`` steps of all envs; after each env step the agent does
``utd_ratio * num_envs`` gradient updates (fractions carry over). The Q-learning
tricks, each where it happens below:

1. Experience replay (a time-major buffer on the training device).
2. Epsilon-greedy exploration, epsilon annealed linearly from ``eps_start`` to
   ``eps_end`` over ``exploration_fraction`` of the run, drawn per env.
3. n-step returns (Sutton 1988; Rainbow): ``R = sum_{k<m} gamma^k r_{t+k}``, cut at the
   first episode end, bootstrapped with ``gamma^m Q(s_{t+m})`` unless that end was a
   termination; time-outs bootstrap from the true final observation.
4. A target network, copied every ``target_update_interval`` gradient steps (or
   Polyak-averaged with ``tau < 1``).
5. Double Q-learning (van Hasselt et al. 2016): the online net picks the next action,
   the target net evaluates it.
6. Huber (smooth L1) loss instead of the squared TD error; gradient-norm clipping.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from roboreal.agents.base import DistContext, Obs
from roboreal.agents.buffers import ReplayBuffer
from roboreal.agents.networks import QNetwork, adam, polyak_update
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.off_policy import CheckpointPart, OffPolicyAlgorithm
from roboreal.config import ConfigError
from roboreal.envs.core import BatchedEnv


@dataclass
class DQNConfig:
    buffer_size: int = 100_000
    batch_size: int = 128
    gamma: float = 0.99
    n_step: int = 3
    learning_rate: float = 5e-4
    double_q: bool = True
    huber: bool = True
    target_update_interval: int = 250  # gradient steps between target updates
    tau: float = 1.0  # 1: hard copy; < 1: Polyak average at each target update
    eps_start: float = 1.0
    eps_end: float = 0.05
    exploration_fraction: float = 0.3  # of the run's total steps
    learning_starts: int = 2000  # transitions before the first update
    steps_per_iteration: int = 50
    utd_ratio: float = 0.25  # gradient updates per collected transition
    max_grad_norm: float = 10.0
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: str = "relu"
    normalize_obs: bool = False
    obs_clip: float = 10.0

    def __post_init__(self) -> None:
        if self.n_step < 1:
            raise ConfigError("n_step", f"must be >= 1, got {self.n_step}")
        if self.utd_ratio <= 0:
            raise ConfigError("utd_ratio", f"must be > 0, got {self.utd_ratio}")


class DQN(OffPolicyAlgorithm):
    name = "dqn"

    def __init__(self, env: BatchedEnv, cfg: DQNConfig, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        super().__init__(env, cfg, device, total_steps, dist)
        spec = env.spec
        if spec.action_type != "discrete":
            raise ConfigError("algo", f"dqn needs discrete actions; {spec.task} has continuous actions "
                                      "(use --algo ppo or sac)")
        self.num_actions = spec.action_size
        self.obs_size = spec.observation_sizes["policy"]
        self.q = QNetwork(self.obs_size, self.num_actions, cfg.hidden, cfg.activation).to(self.device)
        self.q_target = copy.deepcopy(self.q)
        for p in self.q_target.parameters():
            p.requires_grad_(False)
        self.normalizer = make_normalizer(self.obs_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.optimizer = adam(self.q.parameters(), lr=cfg.learning_rate)
        self.groups = ["policy"]
        self.buffer = ReplayBuffer(cfg.buffer_size, self.num_envs, {"policy": self.obs_size}, (), self.device,
                                   action_dtype=torch.long)
        self.reset_env()

    def observe(self, obs: Obs) -> None:
        self.normalizer.update(obs["policy"])

    def epsilon(self) -> float:
        """Linear annealing from eps_start to eps_end over exploration_fraction of the run."""
        cfg = self.cfg
        horizon = max(1.0, cfg.exploration_fraction * self.total_steps)
        frac = min(1.0, self.global_step / horizon)
        return cfg.eps_start + frac * (cfg.eps_end - cfg.eps_start)

    # ----- collection (the loop itself is OffPolicyAlgorithm.iteration) -----
    def explore(self) -> torch.Tensor:
        """2. Epsilon-greedy, one coin per env."""
        eps = self.epsilon()
        with torch.no_grad():
            greedy = self.q(self.normalizer(self.obs["policy"])).argmax(-1)
        random_actions = torch.randint(0, self.num_actions, (self.num_envs,), device=self.device)
        take_random = torch.rand(self.num_envs, device=self.device) < eps
        return torch.where(take_random, random_actions, greedy)

    def ready_to_learn(self) -> bool:
        # n-step targets need n stored steps
        return self.global_step >= self.cfg.learning_starts and self.buffer.filled_rows >= self.cfg.n_step

    def iteration_metrics(self) -> dict[str, float]:
        return {"dqn/epsilon": self.epsilon()}

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        batch = self.buffer.sample(cfg.batch_size, cfg.n_step, cfg.gamma)
        x = self.normalizer(batch["obs"]["policy"])
        next_x = self.normalizer(batch["next_obs"]["policy"])
        with torch.no_grad():
            if cfg.double_q:  # online net selects, target net evaluates
                next_actions = self.q(next_x).argmax(-1, keepdim=True)
                next_q = self.q_target(next_x).gather(-1, next_actions).squeeze(-1)
            else:
                next_q = self.q_target(next_x).max(-1).values
            # n-step target; `discounts` = gamma^m * (1 - terminated at the window's end)
            target = batch["rewards"] + batch["discounts"] * next_q
        q = self.q(x).gather(-1, batch["actions"].long()[:, None]).squeeze(-1)
        loss = nn.functional.smooth_l1_loss(q, target) if cfg.huber else nn.functional.mse_loss(q, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.q.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % cfg.target_update_interval == 0:
            polyak_update(self.q_target, self.q, cfg.tau)
        return {"loss/td": loss.item(), "dqn/q": q.mean().item()}

    @torch.no_grad()
    def act_deterministic(self, obs: Obs) -> torch.Tensor:
        return self.q(self.normalizer(obs["policy"].to(self.device))).argmax(-1)

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        return {"q": self.q, "q_target": self.q_target, "normalizer": self.normalizer, "optimizer": self.optimizer}

    def policy_state(self) -> dict:
        cfg = self.cfg
        return {
            "kind": "q_argmax", "obs_group": "policy", "obs_size": self.obs_size,
            "action_size": self.num_actions, "action_type": "discrete",
            "args": {"hidden": list(cfg.hidden), "activation": cfg.activation, "normalize_obs": cfg.normalize_obs,
                     "obs_clip": cfg.obs_clip},
            "actor": self.q.state_dict(), "normalizer": self.normalizer.state_dict(),
        }
