"""Soft Actor-Critic (Haarnoja et al. 2018) for batched envs, with HER for goal tasks.

The loop is `roboreal.agents.off_policy.OffPolicyAlgorithm`'s: one iteration =
``steps_per_iteration`` steps of all envs; after each env step the agent does
``utd_ratio * num_envs`` gradient updates (the update-to-data ratio counts gradient
updates per collected transition; fractions carry over). The details:

1. Collection from many envs at once into a replay buffer that lives on the training
   device; uniform random actions for the first ``learning_starts`` transitions.
2. Truncation handling (Pardo et al. 2018): the buffer stores the *true* next
   observation (``info["final_observation"]`` at episode ends) and the target
   bootstraps through time-outs; only ``terminated`` cuts the bootstrap.
3. Tanh-squashed Gaussian policy with the change-of-variables log-prob correction
   (`roboreal.agents.networks.TanhGaussianActor`).
4. Clipped double Q (twin critics, min of the two targets; Fujimoto et al. 2018) with
   Polyak-averaged target networks (``tau``).
5. Automatic entropy tuning: ``alpha`` is learned so the policy entropy tracks
   ``target_entropy`` (default ``-action_size``).
6. Goal-conditioned tasks (``env.spec.goal_conditioned``): the actor and critics read
   ``concat(observation, desired_goal)`` (the layout of the env's ``policy`` group), and
   the replay buffer is a `HerReplayBuffer` (hindsight relabeling with the env's
   vectorized ``compute_reward``; strategy ``future``/``final``/``episode``, ``k``
   relabels per real transition).
7. Optional running observation normalization (off by default), applied when sampling
   so relabeled goals are normalized consistently; it is part of the exported policy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch

from roboreal.agents.base import DistContext, Obs, obs_to
from roboreal.agents.buffers import ReplayBuffer
from roboreal.agents.her import HerReplayBuffer
from roboreal.agents.networks import QCritic, TanhGaussianActor, adam, polyak_update
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.off_policy import CheckpointPart, OffPolicyAlgorithm
from roboreal.config import ConfigError
from roboreal.envs.core import BatchedEnv


@dataclass
class HerConfig:
    enabled: bool = True  # used on goal-conditioned tasks only
    strategy: Literal["future", "final", "episode"] = "future"
    k: int = 4  # relabeled transitions per real one: relabel probability k / (k + 1)


@dataclass
class SACConfig:
    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    autotune: bool = True
    alpha: float = 0.2  # initial (autotune) or fixed entropy coefficient
    target_entropy: float | None = None  # None: -action_size
    learning_starts: int = 5000  # transitions collected with uniform random actions before learning
    steps_per_iteration: int = 50  # env steps (of all envs) per runner iteration
    utd_ratio: float = 0.25  # gradient updates per collected transition
    actor_update_interval: int = 1  # delayed policy updates (TD3 style) when > 1
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    normalize_obs: bool = False
    obs_clip: float = 10.0
    target_q_clip: list[float] | None = None  # e.g. [-1/(1-gamma), 0] for -1/0 sparse rewards (HER paper)
    her: HerConfig = field(default_factory=HerConfig)

    def __post_init__(self) -> None:
        if self.utd_ratio <= 0:
            raise ConfigError("utd_ratio", f"must be > 0, got {self.utd_ratio}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError("tau", f"must be in (0, 1], got {self.tau}")
        if self.target_q_clip is not None and len(self.target_q_clip) != 2:
            raise ConfigError("target_q_clip", "expected [low, high]")


class EntropyTuning:
    """Automatic entropy tuning (Haarnoja et al. 2018b): ``alpha = exp(log_alpha)`` is learned so the
    policy's entropy tracks ``target_entropy``; with ``autotune`` off alpha stays at its initial value.
    CrossQ tunes its alpha the same way."""

    def __init__(self, alpha: float, target_entropy: float, autotune: bool, lr: float, device: torch.device):
        self.autotune = autotune
        self.target_entropy = float(target_entropy)
        self.log_alpha = torch.tensor(float(torch.log(torch.tensor(alpha))), device=device, requires_grad=autotune)
        self.optimizer = adam([self.log_alpha], lr=lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp().detach()

    def update(self, log_prob: torch.Tensor) -> dict[str, float]:
        """One step on ``-alpha (log pi(a|s) + target_entropy)`` for fresh actor samples' log-probs."""
        if not self.autotune:
            return {}
        alpha_loss = -(self.log_alpha.exp() * (log_prob.detach() + self.target_entropy)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.optimizer.step()
        return {"loss/alpha": alpha_loss.item()}


class SAC(OffPolicyAlgorithm):
    name = "sac"

    def __init__(self, env: BatchedEnv, cfg: SACConfig, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        super().__init__(env, cfg, device, total_steps, dist)
        spec = env.spec
        if spec.action_type != "continuous":
            raise ConfigError("algo", f"sac needs continuous actions; {spec.task} has discrete actions "
                                      "(use --algo dqn)")
        self.goal = bool(spec.goal_conditioned)
        self.use_her = self.goal and cfg.her.enabled
        self.action_size = spec.action_size
        sizes = spec.observation_sizes
        if self.goal:
            self.groups = ["observation", "achieved_goal", "desired_goal"]
            obs_size = sizes["observation"] + sizes["desired_goal"]
            if sizes.get("policy") != obs_size:
                raise ConfigError("task", f"{spec.task}: goal tasks must expose policy = observation ++ desired_goal "
                                          f"(sizes {sizes})")
        else:
            self.groups = ["policy"]
            obs_size = sizes["policy"]
        self.obs_size = obs_size

        self.actor = TanhGaussianActor(obs_size, self.action_size, cfg.hidden, cfg.activation).to(self.device)
        self.q1 = QCritic(obs_size, self.action_size, cfg.hidden, cfg.activation).to(self.device)
        self.q2 = QCritic(obs_size, self.action_size, cfg.hidden, cfg.activation).to(self.device)
        self.q1_target = copy.deepcopy(self.q1)
        self.q2_target = copy.deepcopy(self.q2)
        for p in list(self.q1_target.parameters()) + list(self.q2_target.parameters()):
            p.requires_grad_(False)
        self.normalizer = make_normalizer(obs_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=cfg.critic_lr)
        self.entropy = EntropyTuning(cfg.alpha, cfg.target_entropy if cfg.target_entropy is not None
                                     else -self.action_size, cfg.autotune, cfg.alpha_lr, self.device)

        buffer_sizes = {g: sizes[g] for g in self.groups}
        if self.use_her:
            self.buffer: ReplayBuffer = HerReplayBuffer(cfg.buffer_size, self.num_envs, buffer_sizes,
                                                        (self.action_size,), self.device, env.compute_reward,
                                                        cfg.her.strategy, cfg.her.k)
        else:
            self.buffer = ReplayBuffer(cfg.buffer_size, self.num_envs, buffer_sizes, (self.action_size,), self.device)
        self.reset_env()

    @property
    def alpha(self) -> torch.Tensor:
        return self.entropy.alpha

    def policy_input(self, obs: Obs) -> torch.Tensor:
        """What the actor and critics read (un-normalized): ``policy``, or ``observation ++ desired_goal``."""
        if self.goal:
            return torch.cat([obs["observation"], obs["desired_goal"]], dim=-1)
        return obs["policy"]

    def observe(self, obs: Obs) -> None:
        self.normalizer.update(self.policy_input(obs))

    # ----- collection (the loop itself is OffPolicyAlgorithm.iteration) -----
    def explore(self) -> torch.Tensor:
        if self.global_step < self.cfg.learning_starts:  # 1. uniform random actions before learning starts
            return self.uniform_actions()
        with torch.no_grad():
            actions, _ = self.actor.sample(self.normalizer(self.policy_input(self.obs)))
        return actions

    def iteration_metrics(self) -> dict[str, float]:
        return {"sac/alpha": float(self.alpha)}

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        batch = self.buffer.sample(cfg.batch_size, 1, cfg.gamma)
        x = self.normalizer(self.policy_input(batch["obs"]))
        next_x = self.normalizer(self.policy_input(batch["next_obs"]))
        actions = batch["actions"]
        alpha = self.alpha

        # Soft Bellman target with clipped double Q; `discounts` = gamma * (1 - terminated).
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_x)
            q_next = torch.min(self.q1_target(next_x, next_actions), self.q2_target(next_x, next_actions))
            target = batch["rewards"] + batch["discounts"] * (q_next - alpha * next_log_prob)
            if cfg.target_q_clip is not None:
                target = target.clamp(cfg.target_q_clip[0], cfg.target_q_clip[1])
        q1, q2 = self.q1(x, actions), self.q2(x, actions)
        q_loss = 0.5 * ((q1 - target).square().mean() + (q2 - target).square().mean())
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()
        metrics = {"loss/q": q_loss.item(), "sac/q": q1.mean().item()}

        if self.updates % cfg.actor_update_interval == 0:
            new_actions, log_prob = self.actor.sample(x)
            q_pi = torch.min(self.q1(x, new_actions), self.q2(x, new_actions))
            actor_loss = (alpha * log_prob - q_pi).mean()
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            metrics["loss/actor"] = actor_loss.item()
            metrics["sac/entropy"] = -log_prob.mean().item()
            metrics.update(self.entropy.update(log_prob))  # 5. automatic entropy tuning

        polyak_update(self.q1_target, self.q1, cfg.tau)
        polyak_update(self.q2_target, self.q2, cfg.tau)
        self.updates += 1
        return metrics

    # ----- acting, checkpointing, export -----
    @torch.no_grad()
    def act_deterministic(self, obs: Obs) -> torch.Tensor:
        return self.actor(self.normalizer(self.policy_input(obs_to(obs, self.device))))

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        return {"actor": self.actor, "q1": self.q1, "q2": self.q2, "q1_target": self.q1_target,
                "q2_target": self.q2_target, "normalizer": self.normalizer, "actor_optimizer": self.actor_optimizer,
                "critic_optimizer": self.critic_optimizer, "alpha_optimizer": self.entropy.optimizer,
                "log_alpha": self.entropy.log_alpha}

    def policy_state(self) -> dict:
        cfg = self.cfg
        return {
            "kind": "tanh_gaussian", "obs_group": "policy", "obs_size": self.obs_size,
            "action_size": self.action_size, "action_type": "continuous",
            "args": {"hidden": list(cfg.hidden), "activation": cfg.activation, "normalize_obs": cfg.normalize_obs,
                     "obs_clip": cfg.obs_clip},
            "actor": self.actor.state_dict(), "normalizer": self.normalizer.state_dict(),
        }
