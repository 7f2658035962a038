"""Proximal Policy Optimization (Schulman et al. 2017) for batched envs.

One iteration = collect ``num_steps`` steps from every env, then ``num_epochs`` passes
of ``num_minibatches`` minibatches over the rollout. The details, in the order they
happen:

1. Running observation normalization (actor and critic inputs; statistics updated with
   every observation received, saved with the policy and baked into its export).
2. Gaussian policy with a learned, state-independent std; actions are stored
   *unclipped* (their log-prob is exact) and clipped to [-1, 1] only when sent to the env.
3. Asymmetric actor-critic: the critic reads the privileged ``critic`` observation group
   when the task has one (Pinto et al. 2018), the actor reads ``policy``.
4. Time-out bootstrapping (Pardo et al. 2018): when an env is *truncated*, its episode
   did not end in a terminal state, so ``gamma * V(final_observation)`` is added to the
   reward of that step (the true last observation comes from
   ``info["final_observation"]``, not the auto-reset observation). The step is then a
   normal ``done`` for GAE. Terminations are not bootstrapped.
5. GAE(lambda) advantages (Schulman et al. 2016), value targets = advantages + values.
6. Per-minibatch advantage normalization.
7. Clipped surrogate objective; clipped value loss (PPO2 baselines; optional, see
   ``clip_value_loss``); entropy bonus.
8. Learning rate: ``adaptive`` from the KL between the old and new policy (rsl_rl:
   /1.5 if KL > 2 * desired_kl, *1.5 if KL < desired_kl / 2), or ``fixed``, or ``linear``
   annealing to zero over the run.
9. Gradient-norm clipping (actor and critic separately).
10. Data-parallel scale-out (``torchrun``): every rank steps its own envs, gradients are
    all-reduced (averaged) before the optimizer step, the KL is averaged so every rank
    picks the same learning rate, normalizer statistics are all-reduced, and the
    parameters therefore stay identical on every rank.
11. From pixels (``images``: ``none`` by default, ``auto`` = the task's cameras, or
    ``"front,wrist"``): the actor is `roboreal.agents.vision.ImageGaussianActor` (a conv
    encoder per camera beside the normalized actor group); the critic stays an MLP on the
    privileged ``critic`` group (point 3), so values need no images. The rollout keeps the
    images as uint8 ``(T, N, C, H, W)`` and every minibatch runs the encoder on its own.
    Augmentation (DrAC, Raileanu et al. 2021): the surrogate and the KL use the images the
    rollout acted on, so the ratio is exact; a random shift of them (DrQ's, ``shift_pad``
    pixels) enters through ``augment_coef * KL(pi(.|s) || pi(.|shift(s)))`` with ``pi(.|s)``
    held fixed, which teaches the encoder shift invariance. (Shifted images inside the
    ratio would count the augmentation as a policy change, in the clipping and in the KL
    the adaptive learning rate follows.) The checkpoint's policy is BC's kind
    ``gaussian_image``, so `build_policy`, ``roboreal play`` and the bundle export take it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.distributions import Normal

from roboreal.agents.base import Algorithm, DistContext, Obs, obs_to
from roboreal.agents.buffers import RolloutStorage
from roboreal.agents.networks import GaussianActor, ValueCritic, adam
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.vision import ImageEncoderCfg, image_policy_state, resolve_image_inputs
from roboreal.config import ConfigError
from roboreal.envs.core import BatchedEnv


@dataclass
class PPOConfig(ImageEncoderCfg):
    num_steps: int = 24  # rollout length per env per iteration
    num_epochs: int = 5
    num_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    # Clipped value loss (PPO2 baselines): the value may move at most `value_clip` (in return
    # units) from its rollout-time estimate per update. Off by default: with undiscounted-scale
    # returns (hundreds, e.g. cartpole's +1 per step) a 0.2 clip stalls the critic and PPO
    # collapses (measured); useful when rewards are small (dt-scaled locomotion rewards).
    clip_value_loss: bool = False
    value_clip: float = 0.2
    value_coef: float = 1.0
    entropy_coef: float = 0.0
    learning_rate: float = 1e-3
    lr_schedule: Literal["adaptive", "fixed", "linear"] = "adaptive"
    desired_kl: float = 0.01
    min_lr: float = 1e-5
    max_lr: float = 1e-2
    max_grad_norm: float = 1.0
    normalize_advantage: bool = True
    normalize_obs: bool = True
    obs_clip: float = 10.0
    bootstrap_timeouts: bool = True
    asymmetric: bool = True  # critic reads the "critic" group when the task has one
    # The group the actor reads. "critic" trains a privileged teacher (simulator state a real
    # robot cannot sense) to distill into a "policy"-group student (`roboreal dagger`).
    actor_group: str = "policy"
    actor_hidden: list[int] = field(default_factory=lambda: [128, 128])
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: str = "elu"
    init_std: float = 1.0
    # Camera images the actor reads: "none" (the vector group only), "auto" (the task's image
    # observations) or camera names "front,wrist" (the policy's call order). The encoder keys
    # (encoder_channels ... shift_pad, here the shift of the augmentation term) are BC's: `ImageEncoderCfg`.
    images: str = "none"
    augment_coef: float = 0.1  # weight of the shift-invariance KL (DrAC's alpha_r); 0 = off

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError("gamma", f"must be in [0, 1], got {self.gamma}")
        if self.augment_coef < 0:
            raise ConfigError("augment_coef", f"must be >= 0, got {self.augment_coef}")
        self.check_encoder_fields()


class PPO(Algorithm):
    name = "ppo"

    def __init__(self, env: BatchedEnv, cfg: PPOConfig, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        super().__init__(env, cfg, device, total_steps, dist)
        spec = env.spec
        if spec.action_type != "continuous":
            raise ConfigError("algo", f"ppo needs continuous actions; {spec.task} has discrete actions "
                                      "(use --algo dqn)")
        if (self.num_envs * cfg.num_steps) // cfg.num_minibatches < 1:
            raise ConfigError("num_minibatches", "more minibatches than samples in a rollout")
        if cfg.actor_group not in spec.observation_sizes:
            raise ConfigError("actor_group", f"{spec.task} has no observation group {cfg.actor_group!r} "
                                             f"(has {sorted(spec.observation_sizes)})")
        self.actor_group = cfg.actor_group
        self.critic_group = "critic" if (cfg.asymmetric and "critic" in spec.observation_sizes) else self.actor_group
        obs_size = spec.observation_sizes[self.actor_group]
        critic_size = spec.observation_sizes[self.critic_group]
        self.action_size = spec.action_size
        self.image_shapes = self._image_shapes(cfg.images, dict(getattr(spec, "image_shapes", None) or {}), spec.task)
        self.image_inputs = [camera for camera, _ in self.image_shapes]

        if self.image_inputs:
            from roboreal.agents.vision import ImageGaussianActor

            self.actor = ImageGaussianActor(obs_size, spec.action_size, list(cfg.actor_hidden), cfg.activation,
                                            self.image_shapes, cfg.encoder(), init_std=cfg.init_std).to(self.device)
        else:
            self.actor = GaussianActor(obs_size, spec.action_size, cfg.actor_hidden, cfg.activation,
                                       cfg.init_std).to(self.device)
        self.critic = ValueCritic(critic_size, cfg.critic_hidden, cfg.activation).to(self.device)
        self.actor_norm = make_normalizer(obs_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.critic_norm = make_normalizer(critic_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.dist.broadcast_module(self.actor)
        self.dist.broadcast_module(self.critic)
        self.params = list(self.actor.parameters()) + list(self.critic.parameters())
        self.learning_rate = cfg.learning_rate
        self.optimizer = adam(self.params, lr=self.learning_rate, eps=1e-5)
        groups = {"actor": obs_size}
        if self.critic_group != self.actor_group:
            groups["critic"] = critic_size
        self.storage = RolloutStorage(cfg.num_steps, self.num_envs, groups, spec.action_size, self.device,
                                      image_shapes=dict(self.image_shapes))
        self.iterations = 0

        obs, _ = env.reset()
        self.obs = obs_to(obs, self.device)
        self._update_normalizers(self.obs)

    @staticmethod
    def _image_shapes(images: str, available: dict[str, tuple[int, ...]], task: str
                      ) -> list[tuple[str, tuple[int, int, int]]]:
        """``[(camera, (C, H, W)), ...]`` the actor reads (``images`` against the task's cameras)."""
        if images == "none":
            return []
        cameras = resolve_image_inputs(images, list(available), where=f"task {task}")
        return [(camera, tuple(int(v) for v in available[camera])) for camera in cameras]

    # ----- observation handling -----
    def _update_normalizers(self, obs: Obs) -> None:
        self.actor_norm.update(obs[self.actor_group], distributed=self.dist.enabled)
        if self.critic_group != self.actor_group:
            self.critic_norm.update(obs[self.critic_group], distributed=self.dist.enabled)

    def _critic_input(self, obs: Obs, actor_in: torch.Tensor | None = None) -> torch.Tensor:
        if self.critic_group == self.actor_group:
            return actor_in if actor_in is not None else self.actor_norm(obs[self.actor_group])
        return self.critic_norm(obs[self.critic_group])

    def _distribution(self, actor_in: torch.Tensor, images: list[torch.Tensor]) -> Normal:
        """The policy at the normalized actor input (+ the uint8 images of `image_inputs`)."""
        if not self.image_inputs:
            return self.actor.distribution(actor_in)
        mean = self.actor(actor_in, *images)
        return Normal(mean, self.actor.log_std.exp().expand_as(mean))

    # ----- one iteration: rollout, GAE, update -----
    def iteration(self) -> dict[str, float]:
        self.collect()
        metrics = self.update()
        self.storage.clear()
        self.iterations += 1
        return metrics

    @torch.no_grad()
    def collect(self) -> None:
        """Fill the rollout storage (``num_steps`` steps of every env) and compute GAE."""
        cfg = self.cfg
        for _ in range(cfg.num_steps):
            actor_in = self.actor_norm(self.obs[self.actor_group])
            critic_in = self._critic_input(self.obs, actor_in)
            images = [self.obs[camera] for camera in self.image_inputs]
            dist = self._distribution(actor_in, images)
            actions = dist.sample()  # stored unclipped
            log_probs = dist.log_prob(actions).sum(-1)
            values = self.critic(critic_in)
            next_obs, rewards, terminated, truncated, info = self.step_env(actions.clamp(-1.0, 1.0))
            rewards = rewards.to(self.device).float()
            truncated = truncated.to(self.device)
            dones = terminated.to(self.device) | truncated
            if cfg.bootstrap_timeouts and truncated.any():
                rewards = rewards + cfg.gamma * self.timeout_bootstrap(info["final_observation"], truncated)
            self.storage.add({"actor": actor_in, "critic": critic_in}, actions, log_probs, rewards, dones,
                             values, dist.mean, dist.stddev, images=dict(zip(self.image_inputs, images)))
            self.obs = obs_to(next_obs, self.device)
            self._update_normalizers(self.obs)
        last_values = self.critic(self._critic_input(self.obs))
        self.storage.compute_returns(last_values, cfg.gamma, cfg.gae_lambda)

    @torch.no_grad()
    def timeout_bootstrap(self, final_obs: Obs, truncated: torch.Tensor) -> torch.Tensor:
        """``V(final_observation)`` for truncated envs, 0 elsewhere (the caller multiplies by gamma)."""
        final_obs = obs_to(final_obs, self.device)
        values = self.critic(self._critic_input(final_obs))
        return torch.where(truncated, values, torch.zeros_like(values))

    def _schedule_lr(self) -> None:
        if self.cfg.lr_schedule == "linear" and self.total_steps > 0:
            frac = 1.0 - min(1.0, self.global_step * self.dist.world_size / self.total_steps)
            self.learning_rate = max(self.cfg.learning_rate * frac, 0.0)
            for g in self.optimizer.param_groups:
                g["lr"] = self.learning_rate

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        self._schedule_lr()
        sums = {"loss/policy": 0.0, "loss/value": 0.0, "loss/entropy": 0.0, "policy/kl": 0.0,
                "policy/clip_fraction": 0.0}
        augment = bool(self.image_inputs) and cfg.shift_pad > 0 and cfg.augment_coef > 0
        if augment:
            sums["loss/augment"] = 0.0
        n = 0
        critic_key = "actor" if self.critic_group == self.actor_group else "critic"
        for _ in range(cfg.num_epochs):
            for mb in self.storage.minibatches(cfg.num_minibatches):
                if augment:
                    dist, augment_loss = self._augmented_distribution(mb)
                else:
                    dist = self._distribution(mb["obs"]["actor"], [mb["images"][c] for c in self.image_inputs])
                log_probs = dist.log_prob(mb["actions"]).sum(-1)
                entropy = dist.entropy().sum(-1).mean()

                # KL(old || new) of the diagonal Gaussians; averaged across ranks.
                with torch.no_grad():
                    old_mu, old_sigma = mb["action_mean"], mb["action_std"]
                    mu, sigma = dist.mean, dist.stddev
                    kl = (torch.log(sigma / old_sigma) + (old_sigma.square() + (old_mu - mu).square())
                          / (2.0 * sigma.square()) - 0.5).sum(-1).mean()
                    kl = self.dist.all_reduce_mean_(kl.clone())
                if cfg.lr_schedule == "adaptive":
                    if kl > 2.0 * cfg.desired_kl:
                        self.learning_rate = max(cfg.min_lr, self.learning_rate / 1.5)
                    elif 0.0 < kl < cfg.desired_kl / 2.0:
                        self.learning_rate = min(cfg.max_lr, self.learning_rate * 1.5)
                    for g in self.optimizer.param_groups:
                        g["lr"] = self.learning_rate

                advantages = mb["advantages"]
                if cfg.normalize_advantage:  # per-minibatch advantage normalization
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # Clipped surrogate objective.
                ratio = torch.exp(log_probs - mb["log_probs"])
                surrogate = -advantages * ratio
                surrogate_clipped = -advantages * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef)
                policy_loss = torch.max(surrogate, surrogate_clipped).mean()

                # Clipped value loss.
                values = self.critic(mb["obs"][critic_key])
                if cfg.clip_value_loss:
                    values_clipped = mb["values"] + (values - mb["values"]).clamp(-cfg.value_clip, cfg.value_clip)
                    value_loss = torch.max((values - mb["returns"]).square(),
                                           (values_clipped - mb["returns"]).square()).mean()
                else:
                    value_loss = (values - mb["returns"]).square().mean()

                loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
                if augment:
                    loss = loss + cfg.augment_coef * augment_loss
                    sums["loss/augment"] += augment_loss.item()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.dist.average_gradients(self.params)
                # Clip actor and critic gradients separately, so a large value loss (returns of
                # hundreds) does not shrink the policy's step through a shared norm.
                nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                sums["loss/policy"] += policy_loss.item()
                sums["loss/value"] += value_loss.item()
                sums["loss/entropy"] += entropy.item()
                sums["policy/kl"] += kl.item()
                sums["policy/clip_fraction"] += ((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item()
                n += 1
        metrics = {k: v / n for k, v in sums.items()}
        metrics["policy/learning_rate"] = self.learning_rate
        metrics["policy/std"] = self.actor.log_std.exp().mean().item()
        return metrics

    def _augmented_distribution(self, mb: dict) -> tuple[Normal, torch.Tensor]:
        """The policy on the minibatch's images as the rollout saw them, and DrAC's shift-invariance
        loss ``KL(pi(.|s) || pi(.|shift(s)))`` with ``pi(.|s)`` held fixed. With the shared,
        state-independent std that KL is ``sum((mu_shift - mu)^2) / (2 sigma^2)``. One encoder
        pass over both batches (concatenated)."""
        from roboreal.agents.vision import random_shift

        images = [mb["images"][camera] for camera in self.image_inputs]
        both = [torch.cat([image, random_shift(image, self.cfg.shift_pad)]) for image in images]
        features, shifted_features = self.actor.encode(*both).chunk(2)
        actor_in = mb["obs"]["actor"]
        mean = self.actor.act_from_features(actor_in, features)
        shifted_mean = self.actor.act_from_features(actor_in, shifted_features)
        std = self.actor.log_std.exp().expand_as(mean)
        augment_loss = ((shifted_mean - mean.detach()).square() / (2.0 * std.detach().square())).sum(-1).mean()
        return Normal(mean, std), augment_loss

    # ----- acting, checkpointing, export -----
    @torch.no_grad()
    def act_deterministic(self, obs: Obs) -> torch.Tensor:
        images = [obs[camera].to(self.device) for camera in self.image_inputs]
        return self.actor(self.actor_norm(obs[self.actor_group].to(self.device)), *images).clamp(-1.0, 1.0)

    def state_dict(self, include_replay: bool = True) -> dict:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "actor_norm": self.actor_norm.state_dict(), "critic_norm": self.critic_norm.state_dict(),
            "optimizer": self.optimizer.state_dict(), "learning_rate": self.learning_rate,
            "obs": self.obs, "global_step": self.global_step, "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_norm.load_state_dict(state["actor_norm"])
        self.critic_norm.load_state_dict(state["critic_norm"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.learning_rate = float(state["learning_rate"])
        self.obs = obs_to(state["obs"], self.device)
        self.global_step = int(state["global_step"])
        self.iterations = int(state["iterations"])

    def policy_state(self) -> dict:
        """The ``gaussian`` kind, or from pixels ``gaussian_image`` with the cameras in
        ``image_inputs`` (BC's form: `roboreal.agents.bc.BCTrainer.policy_state`)."""
        cfg = self.cfg
        state = {
            "kind": "gaussian", "obs_group": self.actor_group,
            "obs_size": self.env.spec.observation_sizes[self.actor_group], "action_size": self.action_size,
            "action_type": "continuous",
            "args": {"hidden": list(cfg.actor_hidden), "activation": cfg.activation, "normalize_obs": cfg.normalize_obs,
                     "obs_clip": cfg.obs_clip},
            "actor": self.actor.state_dict(), "normalizer": self.actor_norm.state_dict(),
        }
        return image_policy_state(state, self.image_shapes, cfg.encoder()) if self.image_inputs else state
