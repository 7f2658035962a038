"""Offline RL's data: every transition of dataset files, with a reward for each (`load_offline_data`).

1. Every step of every episode of the dataset files, whoever acted (expert, noisy policy,
   human takeover). The *executed* action is the action. ``next_obs`` comes from the file. A
   step is *terminal* (no bootstrapping) when it ended its episode by termination: the episode
   attribute ``terminated`` (written by the simulation recorder) tells a time-limit truncation
   (bootstrapped) from a termination; a file without it (robot sessions, hand-written files)
   has its ``dones`` taken as terminations.
2. Rewards: a Q-function needs one per step. Unknown rewards (NaN, e.g. robot recordings) are
   computed from the task's reward function where the observations allow it -- goal tasks
   (panda-reach, panda-pick): ``r = compute_reward(achieved_goal', desired_goal)``, a function
   of the stored goal groups only (`goal_reward_fn`) -- or refused with a `DatasetError` naming
   the file, the count of unknown steps and what to do (``IQLConfig.rewards``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from roboreal.config import ConfigError
from roboreal.data import DatasetError, DatasetReader, Episode


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
