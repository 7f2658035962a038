"""Offline RL with Implicit Q-Learning (IQL; Kostrikov, Nair, Levine 2021, "Offline Reinforcement
Learning with Implicit Q-Learning").

IQL learns from a fixed dataset of ``(s, a, r, s', terminal)`` transitions and never asks a
Q-function about an action the dataset does not contain (the source of offline RL's
over-estimation). The details, in order:

1. Data (`load_offline_data`): every step of every episode of the dataset files, whoever
   acted (expert, noisy policy, human takeover). The *executed* action is the action.
   ``next_obs`` comes from the file. A step is *terminal* (no bootstrapping) when it ended its
   episode by termination: the episode attribute ``terminated`` (written by the simulation
   recorder) tells a time-limit truncation (bootstrapped) from a termination; a file without
   it (robot sessions, hand-written files) has its ``dones`` taken as terminations.
2. Rewards: a Q-function needs one per step. Unknown rewards (NaN, e.g. robot recordings)
   are computed from the task's reward function where the observations allow it -- goal tasks
   (panda-reach, panda-pick): ``r = compute_reward(achieved_goal', desired_goal)``, a function
   of the stored goal groups only -- or refused with a `DatasetError` naming the file, the
   count of unknown steps and what to do (``IQLConfig.rewards``).
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
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from roboreal.agents.networks import QCritic, TanhGaussianActor, ValueCritic, adam
from roboreal.agents.normalizer import make_normalizer
from roboreal.config import ConfigError, to_dict
from roboreal.data import DatasetError, DatasetReader, Episode


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
# Data: transitions with rewards
# --------------------------------------------------------------------------------------


@dataclass
class OfflineData:
    """Flat transitions of whole episodes: ``obs``/``next_obs`` (M, k), ``actions`` (M, A),
    ``rewards`` (M,), ``terminals`` (M,) float (1: no bootstrapping), ``episode`` (M,) ids,
    ``intervention`` (M,) bool; ``files``: per file its counts (steps, episodes, computed rewards)."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminals: torch.Tensor
    episode: torch.Tensor
    intervention: torch.Tensor
    files: dict[str, dict] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode.max()) + 1 if len(self) else 0


RewardFn = Callable[[Episode], "np.ndarray | None"]


def goal_reward_fn(env) -> tuple[RewardFn | None, str]:
    """For a goal task, ``episode -> rewards`` recomputed with the task's own
    ``compute_reward(achieved_goal after the step, desired_goal)``, or None (the episode lacks
    the goal groups). Returns ``(fn, why_not)``: ``fn`` is None when the task cannot do it."""
    task = env.spec.task
    if not getattr(env.spec, "goal_conditioned", False):
        return None, (f"task {task}'s reward is not a function of the stored observations (it needs simulator "
                      f"state), so unknown rewards cannot be computed from the file")
    cfg = env.cfg
    if getattr(cfg, "reward_dt_scaled", False) or getattr(cfg, "only_positive_rewards", False):
        return None, f"task {task} scales or clips its reward; compute_reward does not reproduce it"

    def fn(ep: Episode) -> np.ndarray | None:
        if ep.next_obs is None or "achieved_goal" not in ep.next_obs or "desired_goal" not in ep.obs:
            return None
        with torch.no_grad():
            r = env.compute_reward(torch.as_tensor(ep.next_obs["achieved_goal"]).to(env.device),
                                   torch.as_tensor(ep.obs["desired_goal"]).to(env.device), None)
        return r.detach().cpu().numpy().astype(np.float32).reshape(len(ep))

    return fn, ""


def _terminals(ep: Episode) -> np.ndarray:
    """1 where the episode ended by termination (not a time limit): V(s') is not bootstrapped there."""
    term = (ep.dones > 0).astype(np.float32)
    if "terminated" in ep.attrs and not ep.attrs["terminated"]:
        term[-1] = 0.0  # the recorder says: truncated by the time limit, the future still counts
    return term


def load_offline_data(paths: str | Path | Sequence[str | Path], obs_group: str = "policy",
                      rewards: str = "auto", reward_fn: RewardFn | None = None, why_no_reward_fn: str = "",
                      max_episodes: int | None = None) -> OfflineData:
    """Every step of every readable episode of `paths`, with rewards for all of them.

    ``rewards``: see `IQLConfig.rewards`; `reward_fn` (`goal_reward_fn`) computes an episode's
    rewards from its observations, `why_no_reward_fn` says why there is none. A file whose
    unknown rewards cannot be computed is refused (`DatasetError` naming it, the count and
    what to do); nothing is trained on made-up rewards."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DatasetError("no dataset files given")
    if rewards not in ("auto", "dataset", "task"):
        raise ConfigError("rewards", f"must be 'auto', 'dataset' or 'task', not {rewards!r}")
    parts: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminals", "intervention",
                                              "episode")}
    files: dict[str, dict] = {}
    problems: list[str] = []
    ep_id = 0
    for p in paths:
        with DatasetReader(p) as r:
            names = r.names[:max_episodes] if max_episodes is not None else r.names
            if not names:
                raise DatasetError(f"{p}: no readable episodes")
            stats = {"episodes": 0, "steps": 0, "unknown_rewards": 0, "computed_rewards": 0,
                     "episodes_with_unknown_rewards": 0, "interventions": 0, "successes": 0, "terminals": 0}
            uncomputable = 0
            for name in names:
                ep = r.episode(name)
                n = len(ep)
                if obs_group not in ep.obs:
                    raise DatasetError(f"{p}: {name} has no observation group {obs_group!r} (has {sorted(ep.obs)})")
                if ep.next_obs is None or obs_group not in ep.next_obs:
                    raise DatasetError(f"{p}: {name} has no next_obs/{obs_group}; offline RL needs the observation "
                                       f"each step led to (re-record it with a current roboreal)")
                rew = ep.rewards.astype(np.float32).copy()
                unknown = ~np.isfinite(rew)
                if rewards == "task" or (rewards == "auto" and unknown.any()):
                    computed = reward_fn(ep) if reward_fn is not None else None
                    if computed is not None:
                        take = np.ones(n, bool) if rewards == "task" else unknown
                        rew[take] = computed[take]
                        stats["computed_rewards"] += int(take.sum())
                        unknown = ~np.isfinite(rew)
                    elif rewards == "task":
                        uncomputable += n
                stats["unknown_rewards"] += int(unknown.sum())
                stats["episodes_with_unknown_rewards"] += int(unknown.any())
                term = _terminals(ep)
                parts["obs"].append(ep.obs[obs_group])
                parts["next_obs"].append(ep.next_obs[obs_group])
                parts["actions"].append(ep.actions)
                parts["rewards"].append(rew)
                parts["terminals"].append(term)
                parts["intervention"].append(ep.intervention.astype(bool))
                parts["episode"].append(np.full(n, ep_id))
                ep_id += 1
                stats["episodes"] += 1
                stats["steps"] += n
                stats["interventions"] += int(ep.intervention.sum())
                stats["successes"] += int(bool(ep.success))
                stats["terminals"] += int(term.sum())
            files[str(p)] = stats
            if rewards == "dataset":
                why = "rewards='dataset' does not compute them (rewards=auto computes them from the task where " \
                      "the observations allow)"
            elif why_no_reward_fn:
                why = why_no_reward_fn
            elif reward_fn is not None:
                why = "the file does not store the achieved_goal/desired_goal observation groups the task's " \
                      "reward is computed from"
            else:
                why = "no reward function was given"
            if stats["unknown_rewards"]:
                problems.append(
                    f"{p}: {stats['unknown_rewards']} of {stats['steps']} steps (in "
                    f"{stats['episodes_with_unknown_rewards']} of {stats['episodes']} episodes) have unknown (NaN) "
                    f"rewards, and {why}")
            elif uncomputable:
                problems.append(f"{p}: rewards='task' asks to recompute every reward, but for {uncomputable} of "
                                f"{stats['steps']} steps it cannot be done: {why}")
    if problems:
        raise DatasetError(
            "IQL needs a reward for every step: " + "; ".join(problems) + ". What to do: leave such files out of "
            "the command, record them where the reward is known (a simulation dataset from `roboreal collect` stores "
            "it), or learn from them without rewards with `roboreal bc`")
    t = lambda parts_, dt=torch.float32: torch.as_tensor(np.concatenate(parts_), dtype=dt)  # noqa: E731
    a_size = parts["actions"][0].shape[1]
    return OfflineData(obs=t(parts["obs"]), actions=t(parts["actions"]).reshape(-1, a_size),
                       rewards=t(parts["rewards"]), next_obs=t(parts["next_obs"]), terminals=t(parts["terminals"]),
                       episode=t(parts["episode"], torch.long), intervention=t(parts["intervention"], torch.bool),
                       files=files)


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

    def sample(self, data: OfflineData) -> tuple[torch.Tensor, ...]:
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
        with torch.no_grad():
            for net, tgt in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, tp in zip(net.parameters(), tgt.parameters()):
                    tp.lerp_(p, cfg.polyak)

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


# --------------------------------------------------------------------------------------
# `roboreal offline`: a run directory that play and export take
# --------------------------------------------------------------------------------------


def run_offline(datasets: list[str | Path], task: str | None, cfg: IQLConfig, run_dir: str | Path, seed: int = 0,
                env_overrides: dict | None = None, eval_episodes: int = 64, eval_seed: int = 12345,
                log: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Train IQL on dataset files; write config.yaml, checkpoints/{best,last}.pt, progress.csv,
    metrics.json and TensorBoard scalars (``tb/``) into `run_dir`.

    ``best.pt`` is the policy of the best periodic evaluation (success rate, then return) --
    a choice made with the simulator, which an offline setting on a robot does not have;
    ``last.pt`` is the final policy. Without evaluation both hold the final policy. With
    ``cfg.online_steps`` the offline phase is followed by online fine-tuning (`finetune_iql`) in
    the simulated task; metrics.json then has the offline phase's final scores beside the final ones."""
    from roboreal.agents.bc import (evaluate_policy, plot_curves, run_meta, save_checkpoint, write_metrics,
                                    write_progress, write_run_config)
    from roboreal.envs import make
    from roboreal.data import check_compatible
    from roboreal.envs.registry import recorded_env_kwargs

    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "best.pt").exists():
        raise ConfigError("run_dir", f"{run_dir} already holds a run; choose another --run-dir")
    with DatasetReader(datasets[0]) as r:
        file_task, file_env = r.task, r.env_kwargs
    task = task or file_task
    if not task:
        raise ConfigError("task", "the dataset names no task; pass --task")
    # a dataset recorded for another task keeps only the settings this task has; check_compatible names the mismatch
    env_overrides = {**recorded_env_kwargs({"task": file_task, "env_kwargs": file_env}, task), **(env_overrides or {})}
    env = make(task, num_envs=1, seed=seed, **env_overrides)
    try:
        if cfg.obs_group not in env.spec.observation_sizes:
            raise ConfigError("obs_group", f"task {task} has no observation group {cfg.obs_group!r}")
        for d in datasets:
            with DatasetReader(d) as r:
                check_compatible(dict(r.meta), env, cfg.obs_group)
        reward_fn, why = goal_reward_fn(env)
        data = load_offline_data(datasets, cfg.obs_group, cfg.rewards, reward_fn, why)
        control_dt = float(env.spec.control_dt)
    finally:
        env.close()
    if data.obs.shape[1] != env.spec.observation_sizes[cfg.obs_group]:
        raise DatasetError(f"dataset observation group {cfg.obs_group!r} has size {data.obs.shape[1]}, task {task} "
                           f"has {env.spec.observation_sizes[cfg.obs_group]}")
    composition = {"steps": len(data), "episodes": data.num_episodes,
                   "interventions": int(data.intervention.sum()), "files": data.files,
                   "mean_reward": float(data.rewards.mean()), "terminals": int(data.terminals.sum())}
    config = {"task": task, "algo": "iql", "seed": seed, "num_envs": 1, "device": "cpu", "total_steps": cfg.steps,
              "env": env_overrides, "algorithm": to_dict(cfg), "datasets": [str(d) for d in datasets],
              "dataset": composition}
    write_run_config(run_dir, config)

    ckpt_dir = run_dir / "checkpoints"
    best = {"key": (-math.inf, -math.inf), "step": 0, "scores": {}}

    def meta(step: int) -> dict:
        return run_meta(task, "iql", env_overrides, seed, control_dt, step, updates=step, transitions=len(data))

    def evaluate(agent: IQL, step: int) -> dict:
        save_checkpoint(ckpt_dir / "last.pt", agent.policy_state(cfg.obs_group), meta(step), config,
                        {"iql": agent.networks_state()})
        if eval_episodes <= 0:
            return {}
        scores = evaluate_policy(agent.policy(), task, env_overrides, eval_episodes, eval_seed, cfg.obs_group)
        succ = scores["success_rate"]
        key = (succ if succ == succ else -math.inf, scores["mean_return"])
        if key > best["key"]:
            best.update(key=key, step=step, scores=scores)
            save_checkpoint(ckpt_dir / "best.pt", agent.policy_state(cfg.obs_group), meta(step), config)
        return {"eval/success_rate": succ, "eval/return": scores["mean_return"]}

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"[bold]{task}[/] iql"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("updates  success [green]{task.fields[succ]}[/]"), TimeElapsedColumn())
        total_updates = cfg.steps + math.ceil(cfg.online_steps * cfg.online_utd)
        bar_id = bar.add_task("train", total=total_updates, succ="-")
        bar.start()

    def on_row(row: dict) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, row["step"])
        if bar is not None and "eval/success_rate" in row and row["eval/success_rate"] == row["eval/success_rate"]:
            bar.update(bar_id, succ=f"{row['eval/success_rate']:.0%}")
        if log is not None:
            log(row)

    def on_progress(step: int) -> None:
        if bar is not None and (step % 100 == 0 or step == cfg.steps or step == total_updates):
            bar.update(bar_id, completed=step)

    t0 = time.perf_counter()
    offline_scores: dict = {}
    try:
        agent, rows = train_iql(data, cfg, seed=seed, log=on_row, evaluate=evaluate, on_progress=on_progress)
        offline_wall = time.perf_counter() - t0
        offline_scores = {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("eval/")}
        if cfg.online_steps > 0:
            online_env = make(task, num_envs=cfg.online_envs, seed=seed + 1, **env_overrides)
            try:
                rows += finetune_iql(agent, data, online_env, cfg, seed=seed + 1, log=on_row, evaluate=evaluate,
                                     on_progress=on_progress)
            finally:
                online_env.close()
    finally:
        if bar is not None:
            bar.stop()
        writer.close()
    wall = time.perf_counter() - t0
    if not (ckpt_dir / "best.pt").exists():  # no evaluation: the final policy is the best we know
        save_checkpoint(ckpt_dir / "best.pt", agent.policy_state(cfg.obs_group), meta(cfg.steps), config)
    write_progress(run_dir, rows)
    plot_curves(run_dir, rows, "step", ["loss/q", "loss/value", "eval/success_rate"], f"{task} / iql")
    last = rows[-1] if rows else {}
    metrics = {"task": task, "algo": "iql", "seed": seed, "transitions": len(data), "episodes": data.num_episodes,
               "interventions": composition["interventions"], "updates": agent.updates,
               "wall_time_s": round(wall, 2), "eval_episodes": eval_episodes,
               "success_rate": last.get("eval/success_rate"), "mean_return": last.get("eval/return"),
               "best_step": best["step"], "best_success_rate": best["scores"].get("success_rate"),
               "computed_rewards": sum(f["computed_rewards"] for f in data.files.values()),
               "offline_updates": cfg.steps, "offline_wall_time_s": round(offline_wall, 2),
               "offline_success_rate": offline_scores.get("eval/success_rate"),
               "offline_mean_return": offline_scores.get("eval/return"),
               "online_env_steps": cfg.online_steps}
    write_metrics(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir), "history": rows}
