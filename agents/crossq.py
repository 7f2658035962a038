"""CrossQ (Bhatt et al., ICLR 2024): SAC without target networks, with Batch Renormalization.

Same loop as `roboreal.agents.sac` (`roboreal.agents.off_policy.OffPolicyAlgorithm`'s): one iteration = ``steps_per_iteration`` steps of all
envs; after each env step the agent does ``utd_ratio * num_envs`` gradient updates (the
update-to-data ratio counts gradient updates per collected transition; fractions carry
over). The details, in the order they happen:

1. Collection from many envs at once into a replay buffer on the training device;
   uniform random actions for the first ``learning_starts`` transitions, then samples of
   the actor in eval mode (its BatchRenorm layers use their running statistics).
2. Truncation handling (Pardo et al. 2018): the buffer stores the *true* next observation
   (``info["final_observation"]`` at episode ends) and the target bootstraps through
   time-outs; only ``terminated`` cuts the bootstrap.
3. Batch Renormalization (Ioffe 2017; `roboreal.agents.networks.BatchRenorm`) on the
   input and after every hidden activation of both critics and of the actor. It behaves
   as BatchNorm for the first ``brn_warmup_steps`` training passes of a layer while its
   running statistics settle, then clips the correction to ``r_max`` / ``d_max``.
4. No target networks. Each critic evaluates ``Q(s, a)`` and ``Q(s', a')`` with
   ``a' ~ pi(s')`` (actor in eval mode) in ONE train-mode forward pass over the
   concatenated batch ``[(s, a); (s', a')]``, so the normalization statistics cover both
   the replay and the policy action distribution. The ``Q(s', a')`` half becomes the
   target under a stop-gradient.
5. Clipped double Q: twin critics, the target takes the min of the pair; soft Bellman
   target ``r + gamma (1 - terminated) (min Q(s', a') - alpha log pi(a'|s'))``.
6. Wide critics (the paper: 2048 units; ``critic_hidden``) and Adam with
   ``beta1 = 0.5``, learning rate 1e-3 for actor and critics.
7. Delayed policy updates (``policy_delay = 3`` critic updates per actor update). The
   actor loss is SAC's ``alpha log pi(a|s) - min Q(s, a)``, actor in train mode, the
   critics in eval mode (running statistics; their weights get no gradient).
8. Automatic entropy tuning as in SAC (with every actor update): ``alpha`` is learned so
   the policy entropy tracks ``target_entropy`` (default ``-action_size``).
9. Asymmetric critic: when the task has a privileged ``critic`` observation group
   (go1-walk) the critics read it and the actor reads ``policy`` (``asymmetric``).
10. Optional running observation normalization (off by default) of the actor's and the
    critics' inputs; the actor's is part of the exported policy.

Goal-conditioned tasks train on their ``policy`` group (observation ++ desired goal)
without hindsight relabeling; use ``--algo sac`` for HER.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from roboreal.agents.base import DistContext, Obs, obs_to
from roboreal.agents.buffers import ReplayBuffer
from roboreal.agents.networks import ACTIVATIONS, BRNQCritic, BRNTanhGaussianActor, TanhGaussianActor, adam
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.off_policy import CheckpointPart, OffPolicyAlgorithm
from roboreal.agents.sac import EntropyTuning
from roboreal.config import ConfigError
from roboreal.envs.core import BatchedEnv


@dataclass
class CrossQConfig:
    buffer_size: int = 1_000_000
    batch_size: int = 256  # per half of the joint critic batch (the critics see 2 * batch_size rows)
    gamma: float = 0.99
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    adam_beta1: float = 0.5  # CrossQ: 0.5 for actor and critics (Adam's 0.9 for alpha)
    autotune: bool = True
    alpha: float = 0.2  # initial (autotune) or fixed entropy coefficient
    target_entropy: float | None = None  # None: -action_size
    learning_starts: int = 5000  # transitions collected with uniform random actions before learning
    steps_per_iteration: int = 50  # env steps (of all envs) per runner iteration
    utd_ratio: float = 1.0  # gradient updates per collected transition (the paper's UTD 1)
    policy_delay: int = 3  # critic updates per actor (and alpha) update
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    # The paper's critics are 2048 wide. One update of [2048, 2048] twin critics costs ~10x
    # one of [512, 512] on a CPU thread (agents/README.md), and here the learner shares two
    # cores with the simulator, so the default is modest; set [2048, 2048] on a GPU.
    critic_hidden: list[int] = field(default_factory=lambda: [512, 512])
    activation: str = "relu"
    actor_brn: bool = True  # BatchRenorm in the actor too (as in the paper)
    brn_momentum: float = 0.99  # decay of the running statistics: running <- m * running + (1 - m) * batch
    brn_eps: float = 1e-3
    brn_r_max: float = 3.0
    brn_d_max: float = 5.0
    brn_warmup_steps: int = 100_000  # training passes of a layer that are plain BatchNorm
    brn_warmup: Literal["switch", "ramp"] = "switch"  # switch: CrossQ; ramp: Ioffe's linear relaxation
    asymmetric: bool = True  # critics read the "critic" group when the task has one
    normalize_obs: bool = False
    obs_clip: float = 10.0

    def __post_init__(self) -> None:
        positive = {"buffer_size": self.buffer_size, "actor_lr": self.actor_lr, "critic_lr": self.critic_lr,
                    "alpha_lr": self.alpha_lr, "alpha": self.alpha, "utd_ratio": self.utd_ratio,
                    "steps_per_iteration": self.steps_per_iteration, "policy_delay": self.policy_delay,
                    "brn_eps": self.brn_eps, "obs_clip": self.obs_clip}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(name, f"must be > 0, got {value}")
        if self.batch_size < 2:  # batch statistics of one sample are meaningless
            raise ConfigError("batch_size", f"must be >= 2 (BatchRenorm uses batch statistics), got {self.batch_size}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError("gamma", f"must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise ConfigError("adam_beta1", f"must be in [0, 1), got {self.adam_beta1}")
        if not 0.0 <= self.brn_momentum < 1.0:
            raise ConfigError("brn_momentum", f"must be in [0, 1), got {self.brn_momentum}")
        if self.brn_r_max < 1.0:
            raise ConfigError("brn_r_max", f"must be >= 1, got {self.brn_r_max}")
        if self.brn_d_max < 0.0:
            raise ConfigError("brn_d_max", f"must be >= 0, got {self.brn_d_max}")
        for name in ("learning_starts", "brn_warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("actor_hidden", "critic_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(int(h) < 1 for h in sizes):
                raise ConfigError(name, f"expected a non-empty list of positive layer sizes, got {sizes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError("activation", f"unknown activation {self.activation!r} "
                                            f"(available: {', '.join(ACTIVATIONS)})")

    def brn_args(self) -> dict:
        """`BatchRenorm` keyword arguments."""
        return {"momentum": self.brn_momentum, "eps": self.brn_eps, "r_max": self.brn_r_max,
                "d_max": self.brn_d_max, "warmup_steps": self.brn_warmup_steps, "warmup": self.brn_warmup}


class CrossQ(OffPolicyAlgorithm):
    name = "crossq"

    def __init__(self, env: BatchedEnv, cfg: CrossQConfig, device: str | torch.device = "cpu", total_steps: int = 0,
                 dist: DistContext | None = None):
        super().__init__(env, cfg, device, total_steps, dist)
        spec = env.spec
        if spec.action_type != "continuous":
            raise ConfigError("algo", f"crossq needs continuous actions; {spec.task} has discrete actions "
                                      "(use --algo dqn)")
        sizes = spec.observation_sizes
        self.action_size = spec.action_size
        self.actor_group = "policy"
        self.critic_group = "critic" if (cfg.asymmetric and "critic" in sizes) else "policy"
        self.groups = sorted({self.actor_group, self.critic_group})
        self.obs_size = sizes[self.actor_group]
        critic_size = sizes[self.critic_group]

        norm = cfg.brn_args()
        if cfg.actor_brn:
            self.actor = BRNTanhGaussianActor(self.obs_size, self.action_size, cfg.actor_hidden, cfg.activation, norm)
        else:
            self.actor = TanhGaussianActor(self.obs_size, self.action_size, cfg.actor_hidden, cfg.activation)
        self.actor.to(self.device)
        self.q1 = BRNQCritic(critic_size, self.action_size, cfg.critic_hidden, cfg.activation, norm).to(self.device)
        self.q2 = BRNQCritic(critic_size, self.action_size, cfg.critic_hidden, cfg.activation, norm).to(self.device)
        self.actor_norm = make_normalizer(self.obs_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.critic_norm = make_normalizer(critic_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        betas = (cfg.adam_beta1, 0.999)
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr, betas=betas)
        self.critic_optimizer = adam(list(self.q1.parameters()) + list(self.q2.parameters()), lr=cfg.critic_lr,
                                     betas=betas)
        self.entropy = EntropyTuning(cfg.alpha, cfg.target_entropy if cfg.target_entropy is not None
                                     else -self.action_size, cfg.autotune, cfg.alpha_lr, self.device)

        self.buffer = ReplayBuffer(cfg.buffer_size, self.num_envs, {g: sizes[g] for g in self.groups},
                                   (self.action_size,), self.device)
        self._eval_mode()
        self.reset_env()

    @property
    def alpha(self) -> torch.Tensor:
        return self.entropy.alpha

    def _eval_mode(self) -> None:
        """Acting and bootstrapping read the running statistics; training passes switch modes explicitly."""
        for net in (self.actor, self.q1, self.q2):
            net.eval()

    def observe(self, obs: Obs) -> None:
        self.actor_norm.update(obs[self.actor_group])
        if self.critic_group != self.actor_group:
            self.critic_norm.update(obs[self.critic_group])

    def _critic_input(self, obs: Obs, actor_in: torch.Tensor) -> torch.Tensor:
        if self.critic_group == self.actor_group:
            return actor_in
        return self.critic_norm(obs[self.critic_group])

    # ----- collection (the loop itself is OffPolicyAlgorithm.iteration) -----
    def explore(self) -> torch.Tensor:
        if self.global_step < self.cfg.learning_starts:  # 1. uniform random actions before learning starts
            return self.uniform_actions()
        with torch.no_grad():  # the actor in eval mode: its BatchRenorm layers use their running statistics
            actions, _ = self.actor.sample(self.actor_norm(self.obs[self.actor_group]))
        return actions

    def iteration_metrics(self) -> dict[str, float]:
        return {"crossq/alpha": float(self.alpha)}

    def update(self) -> dict[str, float]:
        cfg = self.cfg
        batch = self.buffer.sample(cfg.batch_size, 1, cfg.gamma)
        x = self.actor_norm(batch["obs"][self.actor_group])
        next_x = self.actor_norm(batch["next_obs"][self.actor_group])
        c = self._critic_input(batch["obs"], x)
        next_c = self._critic_input(batch["next_obs"], next_x)
        alpha = self.alpha

        # a' ~ pi(s') from the actor in eval mode (running statistics), no gradient.
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_x)
        # One train-mode pass over [(s, a); (s', a')]: the BatchRenorm statistics see both halves.
        self.q1.train()
        self.q2.train()
        joint_obs = torch.cat([c, next_c])
        joint_actions = torch.cat([batch["actions"], next_actions])
        q1, q1_next = self.q1(joint_obs, joint_actions).chunk(2)
        q2, q2_next = self.q2(joint_obs, joint_actions).chunk(2)
        self.q1.eval()
        self.q2.eval()
        # Soft Bellman target with clipped double Q and a stop-gradient on the next-state half;
        # `discounts` = gamma * (1 - terminated).
        with torch.no_grad():
            q_next = torch.min(q1_next, q2_next)
            target = batch["rewards"] + batch["discounts"] * (q_next - alpha * next_log_prob)
        q_loss = 0.5 * ((q1 - target).square().mean() + (q2 - target).square().mean())
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()
        metrics = {"loss/q": q_loss.item(), "crossq/q": q1.mean().item(), "crossq/q_target": target.mean().item()}

        if self.updates % cfg.policy_delay == 0:  # delayed policy update
            self.actor.train()
            new_actions, log_prob = self.actor.sample(x)
            self.actor.eval()
            q_pi = torch.min(self.q1(c, new_actions), self.q2(c, new_actions))  # critics in eval mode
            actor_loss = (alpha * log_prob - q_pi).mean()
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward(inputs=list(self.actor.parameters()))  # no gradient into the critics' weights
            self.actor_optimizer.step()
            metrics["loss/actor"] = actor_loss.item()
            metrics["crossq/entropy"] = -log_prob.mean().item()
            metrics.update(self.entropy.update(log_prob))  # 8. automatic entropy tuning
        self.updates += 1
        return metrics

    # ----- acting, checkpointing, export -----
    @torch.no_grad()
    def act_deterministic(self, obs: Obs) -> torch.Tensor:
        return self.actor(self.actor_norm(obs_to(obs, self.device)[self.actor_group]))

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        return {"actor": self.actor, "q1": self.q1, "q2": self.q2, "actor_norm": self.actor_norm,
                "critic_norm": self.critic_norm, "actor_optimizer": self.actor_optimizer,
                "critic_optimizer": self.critic_optimizer, "alpha_optimizer": self.entropy.optimizer,
                "log_alpha": self.entropy.log_alpha}

    def policy_state(self) -> dict:
        cfg = self.cfg
        return {
            "kind": "tanh_gaussian_brn" if cfg.actor_brn else "tanh_gaussian", "obs_group": self.actor_group,
            "obs_size": self.obs_size, "action_size": self.action_size, "action_type": "continuous",
            "args": {"hidden": list(cfg.actor_hidden), "activation": cfg.activation,
                     "normalize_obs": cfg.normalize_obs, "obs_clip": cfg.obs_clip,
                     **({"norm": cfg.brn_args()} if cfg.actor_brn else {})},
            "actor": self.actor.state_dict(), "normalizer": self.actor_norm.state_dict(),
        }
