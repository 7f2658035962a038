"""Offline RL with Implicit Q-Learning (IQL; Kostrikov, Nair, Levine 2021, "Offline Reinforcement
Learning with Implicit Q-Learning").

IQL learns from a fixed dataset of ``(s, a, r, s', terminal)`` transitions and never asks a
Q-function about an action the dataset does not contain (the source of offline RL's
over-estimation). The details, in order:

1. Data (`roboreal.agents.offline_data.load_offline_data`): every step of every episode of the
   dataset files, whoever acted; the *executed* action is the action; a step is *terminal* (no
   bootstrapping) only when its episode ended by termination, not by a time limit.
2. Rewards: a Q-function needs one per step. Unknown rewards (NaN, e.g. robot recordings) are
   computed from the task where its observations allow (goal tasks), or the file is refused
   (``IQLConfig.rewards``; details in `roboreal.agents.offline_data`).
3. Observation normalization: a `RunningNormalizer` fitted once to the dataset's
   observations (and next observations), shared by every network and saved in the policy.
4. Value: expectile regression of ``V(s)`` on ``min(Q1_target, Q2_target)(s, a)`` with the
   asymmetric squared loss ``|tau - 1(u < 0)| u^2``, ``u = Q - V`` (paper eq. 5). With
   ``tau > 0.5``, ``V`` approaches the maximum of Q over the *dataset's* actions.
5. Q: twin critics regressed to ``r + gamma (1 - terminal) V(s')`` (paper eq. 6): V, not a
   max over actions, so no out-of-distribution action is ever evaluated.
6. Target Q networks, Polyak-averaged with rate ``polyak`` after every update.
7. Policy extraction by advantage-weighted regression (paper eq. 7):
   ``max E[exp(beta (Q_target(s, a) - V(s))) log pi(a | s)]``, the weight clipped at
   ``max_weight`` (100). ``policy="gaussian"``: the log-likelihood of the dataset action under
   ``N(tanh(mu(s)), sigma(s))`` (`TanhGaussianActor`'s heads; the paper's std is
   state-independent, SAC's actor module is reused here so `build_policy` takes it as is);
   ``policy="deterministic"``: the weighted squared error of ``tanh(mu(s))``. Either way the
   deployed action is ``tanh(mu(s))`` in [-1, 1] (checkpoint ``policy`` kind
   ``"tanh_gaussian"``, which ``roboreal play`` and ``roboreal export`` read).
   ``temperature=0`` gives every sample weight 1: plain BC on all executed actions.
8. Adam (3e-4 for every network, batch 256, two hidden layers of 256 ReLU units: the paper's
   settings), a cosine decay of the actor's learning rate (the paper's), ``steps`` gradient
   steps (the paper: 1M); a periodic deterministic evaluation in the simulated task.
9. Online fine-tuning (``online_steps > 0``; `finetune_iql`, the paper's section 5.3): the offline
   agent keeps its networks, optimizers and the dataset's observation normalizer, and collects
   ``online_steps`` transitions in ``online_envs`` simulated envs, sampling its actions
   (``N(tanh(mu), sigma)`` clipped to [-1, 1]; ``tanh(mu) + online_noise`` noise for the
   deterministic policy). They are appended to the dataset's transitions (time-outs bootstrapped,
   terminations not), and ``online_utd`` IQL updates per transition draw from the union. The actor's
   learning rate is the constant ``online_actor_lr`` (a tenth of ``actor_lr``: the cosine schedule
   ended near 0 with the offline phase, and a jump back to 3e-4 undid good policies).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from roboreal.agents.buffers import TransitionBuffer
from roboreal.agents.networks import QCritic, TanhGaussianActor, ValueCritic, adam, polyak_update
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.offline_data import OfflineData
from roboreal.config import ConfigError
from roboreal.data import DatasetError


@dataclass
class IQLConfig:
    expectile: float = 0.7  # tau: 0.7 locomotion / manipulation (Kitchen, Adroit), 0.9 AntMaze
    temperature: float = 3.0  # beta: 3 locomotion, 10 AntMaze, 0.5 Kitchen/Adroit; 0 = BC on every action
    max_weight: float = 100.0  # exp(beta * advantage) is clipped here (the paper's 100)
    gamma: float = 0.99
    polyak: float = 0.005  # target network update rate (the paper's alpha)
    policy: Literal["gaussian", "deterministic"] = "gaussian"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    actor_lr_schedule: Literal["cosine", "constant"] = "cosine"
    batch_size: int = 256
    steps: int = 1_000_000  # gradient steps (the paper's; on CPU pass --steps)
    normalize_obs: bool = True
    obs_clip: float = 10.0
    reward_scale: float = 1.0  # r <- reward_scale * r + reward_shift (the paper shifts AntMaze's by -1)
    reward_shift: float = 0.0
    # "auto": the dataset's rewards, unknown (NaN) ones computed from the task where its observations allow;
    # "dataset": refuse any unknown reward; "task": recompute every reward from the task (goal tasks)
    rewards: Literal["auto", "dataset", "task"] = "auto"
    obs_group: str = "policy"
    eval_interval: int = 10_000  # gradient steps between deterministic evaluations (0: only at the end)
    log_interval: int = 1_000  # gradient steps between TensorBoard / progress.csv rows
    # online fine-tuning after the offline phase (the paper's section 5.3): the same updates, drawn from the
    # dataset plus the transitions the policy collects in the simulated task
    online_steps: int = 0  # env transitions to collect (0: offline only)
    online_envs: int = 8  # simulated envs stepped in parallel while fine-tuning
    online_utd: float = 1.0  # gradient updates per collected transition (the paper's 1)
    online_noise: float = 0.1  # exploration std added to tanh(mu) when policy="deterministic"
    # the actor's constant learning rate online: the offline cosine schedule ends near 0, and jumping back to
    # actor_lr (3e-4) undid a policy at 100% (panda-pick, seed 2: 100% -> 50% after 5k steps; 3e-5: 100%)
    online_actor_lr: float = 3e-5

    def __post_init__(self) -> None:
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError("expectile", f"must be in (0, 1), got {self.expectile}")
        if self.temperature < 0:
            raise ConfigError("temperature", f"must be >= 0, got {self.temperature}")
        if self.max_weight <= 0:
            raise ConfigError("max_weight", f"must be > 0, got {self.max_weight}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError("gamma", f"must be in [0, 1], got {self.gamma}")
        if not 0.0 < self.polyak <= 1.0:
            raise ConfigError("polyak", f"must be in (0, 1], got {self.polyak}")
        for name in ("actor_lr", "critic_lr", "value_lr", "obs_clip"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("batch_size", "steps", "log_interval", "online_envs"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("online_steps", "online_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.online_actor_lr > 0:
            raise ConfigError("online_actor_lr", f"must be > 0, got {self.online_actor_lr}")
        if not self.online_utd > 0:
            raise ConfigError("online_utd", f"must be > 0, got {self.online_utd}")
        if self.eval_interval < 0:
            raise ConfigError("eval_interval", f"must be >= 0, got {self.eval_interval}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError("hidden", f"needs at least one layer of >= 1 units, got {self.hidden}")
        if not math.isfinite(self.reward_scale) or not math.isfinite(self.reward_shift):
            raise ConfigError("reward_scale", "reward_scale and reward_shift must be finite")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``|tau - 1(u < 0)| * u^2`` per element, ``u = diff = target - prediction`` (paper eq. 5).

    ``tau = 0.5`` is half the squared error; ``tau > 0.5`` weights under-estimates (``u > 0``)
    more, so the minimizer moves towards the upper end of the target distribution."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.square()


# --------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------


class IQL:
    """Twin Q, their targets, V and the actor; `update` is one gradient step of each (paper Algorithm 1)."""

    def __init__(self, obs_size: int, action_size: int, cfg: IQLConfig, seed: int = 0, device: str = "cpu"):
        self.cfg = cfg
        self.obs_size, self.action_size = int(obs_size), int(action_size)
        self.device = torch.device(device)
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        hid, act = list(cfg.hidden), cfg.activation
        self.normalizer = make_normalizer(obs_size, cfg.normalize_obs, cfg.obs_clip).to(self.device)
        self.q1 = QCritic(obs_size, action_size, hid, act).to(self.device)
        self.q2 = QCritic(obs_size, action_size, hid, act).to(self.device)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in (*self.q1_target.parameters(), *self.q2_target.parameters()):
            p.requires_grad_(False)
        self.value = ValueCritic(obs_size, hid, act).to(self.device)
        self.actor = TanhGaussianActor(obs_size, action_size, hid, act).to(self.device)
        self.q_optimizer = adam([*self.q1.parameters(), *self.q2.parameters()], cfg.critic_lr)
        self.v_optimizer = adam(self.value.parameters(), cfg.value_lr)
        self.actor_optimizer = adam(self.actor.parameters(), cfg.actor_lr)
        self.actor_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, cfg.steps) \
            if cfg.actor_lr_schedule == "cosine" else None
        self.updates = 0

    def fit_normalizer(self, data: OfflineData) -> None:
        self.normalizer.update(torch.cat([data.obs, data.next_obs]).to(self.device))

    def sample(self, data: OfflineData | TransitionBuffer) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, len(data), (self.cfg.batch_size,), generator=self.generator)
        cfg = self.cfg
        return (data.obs[idx].to(self.device),
                data.actions[idx].clamp(-1.0, 1.0).to(self.device),  # the env clips executed actions so too
                (data.rewards[idx] * cfg.reward_scale + cfg.reward_shift).to(self.device),
                data.next_obs[idx].to(self.device), data.terminals[idx].to(self.device))

    def target_q(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.min(self.q1_target(s, a), self.q2_target(s, a))

    def update(self, batch: tuple[torch.Tensor, ...]) -> dict:
        cfg = self.cfg
        obs, actions, rewards, next_obs, terminals = batch
        s, s_next = self.normalizer(obs), self.normalizer(next_obs)

        # 4. value: expectile regression of V(s) on the (target) twin-Q minimum at the dataset's action
        with torch.no_grad():
            q_t = self.target_q(s, actions)
        v = self.value(s)
        value_loss = expectile_loss(q_t - v, cfg.expectile).mean()
        self.v_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.v_optimizer.step()

        # 5. Q: r + gamma (1 - terminal) V(s'); V replaces max_a' Q(s', a'), so no unseen action is queried
        with torch.no_grad():
            target = rewards + cfg.gamma * (1.0 - terminals) * self.value(s_next)
        q1, q2 = self.q1(s, actions), self.q2(s, actions)
        q_loss = (q1 - target).square().mean() + (q2 - target).square().mean()
        self.q_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_optimizer.step()

        # 6. Polyak averaging of the targets
        polyak_update(self.q1_target, self.q1, cfg.polyak)
        polyak_update(self.q2_target, self.q2, cfg.polyak)

        # 7. advantage-weighted regression: exp(beta * (Q_target - V)), clipped at max_weight
        with torch.no_grad():
            adv = q_t - self.value(s)
            weight = torch.exp(cfg.temperature * adv).clamp(max=cfg.max_weight)
        mean, log_std = self.actor.mean_log_std(s)
        mean = torch.tanh(mean)
        if cfg.policy == "gaussian":
            log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
            actor_loss = -(weight * log_prob).mean()
        else:
            actor_loss = (weight * (mean - actions).square().sum(-1)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        if self.actor_schedule is not None:
            self.actor_schedule.step()
        self.updates += 1
        return {"loss/value": value_loss.detach(), "loss/q": q_loss.detach(), "loss/actor": actor_loss.detach(),
                "q/mean": q1.detach().mean(), "v/mean": v.detach().mean(), "advantage/mean": adv.mean(),
                "weight/mean": weight.mean(), "weight/clipped_fraction": (weight >= cfg.max_weight).float().mean()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mu(s))`` for raw observations."""
        return self.actor(self.normalizer(obs.to(self.device)))

    def policy_state(self, obs_group: str = "policy") -> dict:
        """The runner's ``policy`` checkpoint entry (SAC's ``tanh_gaussian`` kind: ``tanh`` of the mean)."""
        cfg = self.cfg
        return {"kind": "tanh_gaussian", "obs_group": obs_group, "obs_size": self.obs_size,
                "action_size": self.action_size, "action_type": "continuous",
                "args": {"hidden": list(cfg.hidden), "activation": cfg.activation, "normalize_obs": cfg.normalize_obs,
                         "obs_clip": cfg.obs_clip},
                "actor": {k: v.detach().cpu().clone() for k, v in self.actor.state_dict().items()},
                "normalizer": {k: v.detach().cpu().clone() for k, v in self.normalizer.state_dict().items()}}

    def networks_state(self) -> dict:
        """Every network (critics, targets, value), for inspection or a later fine-tuning."""
        nets = {"q1": self.q1, "q2": self.q2, "q1_target": self.q1_target, "q2_target": self.q2_target,
                "value": self.value, "actor": self.actor, "normalizer": self.normalizer}
        return {k: {n: t.detach().cpu().clone() for n, t in m.state_dict().items()} for k, m in nets.items()}

    def policy(self) -> nn.Module:
        from roboreal.agents.policy import build_policy

        return build_policy(self.policy_state(self.cfg.obs_group))


# --------------------------------------------------------------------------------------
# Training: offline, then (optionally) online fine-tuning
# --------------------------------------------------------------------------------------


class _UpdateMeans:
    """The means of the update metrics since the last row, and the update rate. Sums stay tensors
    (no device sync per update) until a row is taken."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count, self.since = 0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def take(self, now: float) -> dict[str, float]:
        """``perf/updates_per_s`` and each metric's mean since the last call; starts afresh."""
        row = {"perf/updates_per_s": round(self.count / max(now - self.since, 1e-9), 1),
               **{k: round(float(v) / max(self.count, 1), 6) for k, v in self.sums.items()}}
        self.sums, self.count, self.since = {}, 0, now
        return row


def train_iql(data: OfflineData, cfg: IQLConfig, seed: int = 0, log: Callable[[dict], None] | None = None,
              evaluate: Callable[["IQL", int], dict] | None = None, on_progress: Callable[[int], None] | None = None,
              device: str = "cpu") -> tuple[IQL, list[dict]]:
    """``cfg.steps`` IQL updates on `data`; every ``log_interval`` steps a row (means since the last row)
    goes to `log`; every ``eval_interval`` steps (and at the end) ``evaluate(agent, step)`` adds its
    scores to the row. Returns the agent (last weights) and the rows."""
    if len(data) == 0:
        raise DatasetError("no transitions to learn from")
    agent = IQL(data.obs.shape[1], data.actions.shape[1], cfg, seed=seed, device=device)
    agent.fit_normalizer(data)
    rows: list[dict] = []
    means = _UpdateMeans()
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        means.add(agent.update(agent.sample(data)))
        if on_progress is not None:
            on_progress(step)
        eval_now = evaluate is not None and (step == cfg.steps or (cfg.eval_interval and step % cfg.eval_interval == 0))
        if step % cfg.log_interval == 0 or step == cfg.steps or eval_now:
            now = time.perf_counter()
            row = {"step": step, "time_s": round(now - t0, 3), **means.take(now)}
            if eval_now:
                row.update(evaluate(agent, step))
            rows.append(row)
            if log is not None:
                log(row)
    return agent, rows


@torch.no_grad()
def explore_action(agent: IQL, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The fine-tuning behaviour policy: a sample of the actor's Gaussian around ``tanh(mu)``
    (or ``online_noise`` for the deterministic actor), clipped to the action range."""
    mean, log_std = agent.actor.mean_log_std(agent.normalizer(obs.to(agent.device)))
    mean = torch.tanh(mean).cpu()
    std = log_std.exp().cpu() if agent.cfg.policy == "gaussian" else torch.full_like(mean, agent.cfg.online_noise)
    return (mean + std * torch.randn(mean.shape, generator=generator)).clamp(-1.0, 1.0)


def finetune_iql(agent: IQL, data: OfflineData, env, cfg: IQLConfig, seed: int = 0,
                 log: Callable[[dict], None] | None = None, evaluate: Callable[["IQL", int], dict] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """Online fine-tuning of an offline-trained `agent` in the batched `env` (see item 9 above).

    Gradient steps continue the offline count (``row["step"]``); rows also carry the online
    env transitions so far and the mean return / success rate of the training episodes that
    ended since the previous row. Evaluation as in `train_iql`, every ``eval_interval`` updates
    and at the end."""
    n = env.num_envs
    buffer = TransitionBuffer(data, cfg.online_steps + n)
    agent.actor_schedule = None
    for group in agent.actor_optimizer.param_groups:
        group["lr"] = cfg.online_actor_lr
    generator = torch.Generator().manual_seed(seed + 7)
    obs = env.reset(seed=seed)[0][cfg.obs_group].cpu().float()
    rows: list[dict] = []
    means = _UpdateMeans()
    collected, debt = 0, 0.0
    ep_returns: list[float] = []
    ep_success: list[float] = []
    step = agent.updates
    next_row, next_eval = step + cfg.log_interval, step + cfg.eval_interval if cfg.eval_interval else None
    t0 = time.perf_counter()
    while collected < cfg.online_steps:
        actions = explore_action(agent, obs, generator)
        next_obs, rewards, terminated, truncated, info = env.step(actions.to(env.device))
        real_next = info.get("final_observation", next_obs)[cfg.obs_group].cpu().float()
        buffer.add(obs, actions, rewards.cpu().float(), real_next, terminated.cpu().float())
        ep = info.get("episode") or {}
        if "return" in ep:
            ep_returns += ep["return"].reshape(-1).float().tolist()
        if "success" in ep:
            ep_success += ep["success"].reshape(-1).float().tolist()
        obs = next_obs[cfg.obs_group].cpu().float()
        collected += n
        debt += n * cfg.online_utd
        while debt >= 1.0:
            debt -= 1.0
            means.add(agent.update(agent.sample(buffer)))
            step = agent.updates
            if on_progress is not None:
                on_progress(step)
        last = collected >= cfg.online_steps
        eval_now = evaluate is not None and (last or (next_eval is not None and step >= next_eval))
        if step >= next_row or eval_now or last:
            now = time.perf_counter()
            row = {"step": step, "time_s": round(now - t0, 3), "online/env_steps": collected, **means.take(now)}
            if ep_returns:
                row["online/return"] = round(float(np.mean(ep_returns)), 4)
            if ep_success:
                row["online/success_rate"] = round(float(np.mean(ep_success)), 4)
            ep_returns, ep_success = [], []
            next_row = step + cfg.log_interval
            if eval_now:
                row.update(evaluate(agent, step))
                next_eval = step + cfg.eval_interval if cfg.eval_interval else None
            rows.append(row)
            if log is not None:
                log(row)
    return rows
