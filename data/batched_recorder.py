"""`BatchedRecorder`: a batched env's steps into a `DatasetWriter`, one demo per finished env episode."""

from __future__ import annotations

import numpy as np
import torch

from roboreal.data.writer import DatasetWriter


class BatchedRecorder:
    """Records a batched env's steps into a `DatasetWriter`, one episode per finished env episode.

    Call `record(obs, actions, reward, terminated, truncated, info, ...)` after every
    ``env.step`` with the observation the actions were computed from; an env's episode is
    written when it ends (``info["final_observation"]`` becomes its last ``next_obs``).
    ``max_episodes`` stops writing after that many episodes (the rest are dropped).
    Camera entries of the obs ((N, C, H, W) uint8, keyed by camera) are recorded like the
    vector groups, one (C, H, W) frame per env and step, and stored as uint8 image groups
    (see `DatasetWriter`).
    """

    def __init__(self, writer: DatasetWriter, num_envs: int, max_episodes: int | None = None,
                 episode_attrs: dict | None = None, with_states: bool = False):
        self.writer = writer
        self.num_envs = num_envs
        self.max_episodes = max_episodes
        self.episode_attrs = dict(episode_attrs or {})
        self.with_states = with_states
        self.buffers: list[list[dict]] = [[] for _ in range(num_envs)]
        self.written = 0
        self.results: list[dict] = []  # per written episode: name, length, success, return, labels, interventions

    @property
    def done(self) -> bool:
        return self.max_episodes is not None and self.written >= self.max_episodes

    def clear_running(self) -> None:
        """Drop the unfinished episodes (e.g. before the env is reset)."""
        self.buffers = [[] for _ in range(self.num_envs)]

    def record(self, obs: dict, actions: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor,
               truncated: torch.Tensor, info: dict, *, expert_actions: torch.Tensor | None = None,
               policy_actions: torch.Tensor | None = None, intervention: torch.Tensor | None = None,
               states: np.ndarray | None = None, skip: torch.Tensor | None = None) -> list[str]:
        """`skip` (N,) bool: envs whose step is not recorded (e.g. finished their quota)."""
        done = (terminated | truncated).cpu().numpy()
        final = info.get("final_observation", None)
        names = []
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        obs_c = {k: v.detach().cpu() for k, v in obs.items()}
        fin_c = {k: v.detach().cpu() for k, v in final.items()} if final is not None else None
        act_c, exp_c, pol_c, int_c = cpu(actions), cpu(expert_actions), cpu(policy_actions), cpu(intervention)
        rew_c = reward.detach().cpu()
        succ = info.get("is_success")
        succ_c = succ.detach().cpu() if succ is not None else None
        skip_c = skip.cpu().numpy() if skip is not None else np.zeros(self.num_envs, dtype=bool)
        for i in range(self.num_envs):
            if skip_c[i]:
                continue
            step = {"obs": {k: v[i] for k, v in obs_c.items()}, "action": act_c[i], "reward": float(rew_c[i]),
                    "done": bool(done[i]),
                    "expert_action": None if exp_c is None or torch.isnan(exp_c[i]).all() else exp_c[i],
                    "policy_action": None if pol_c is None or torch.isnan(pol_c[i]).all() else pol_c[i],
                    "intervention": bool(int_c[i]) if int_c is not None else False,
                    "next_obs": {k: v[i] for k, v in fin_c.items()} if fin_c is not None else None,
                    "state": states[i] if states is not None else None}
            self.buffers[i].append(step)
            if done[i]:
                steps, self.buffers[i] = self.buffers[i], []
                if self.done:
                    continue
                for s in steps:
                    self.writer.add_step(s["obs"], s["action"], s["reward"], s["done"],
                                         expert_action=s["expert_action"], policy_action=s["policy_action"],
                                         intervention=s["intervention"], next_obs=s["next_obs"], state=s["state"])
                success = bool(succ_c[i]) if succ_c is not None else None
                attrs = {**self.episode_attrs, "env_index": i, "terminated": bool(terminated[i])}
                name = self.writer.end_episode(success=success, success_source="env" if success is not None else None,
                                               **attrs)
                self.written += 1
                self.results.append({
                    "name": name, "length": len(steps), "success": success,
                    "return": float(sum(s["reward"] for s in steps)),
                    "labels": sum(s["expert_action"] is not None for s in steps),
                    "interventions": sum(s["intervention"] for s in steps)})
                names.append(name)
        return names
