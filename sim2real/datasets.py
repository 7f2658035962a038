"""Demonstration datasets: one HDF5 format for simulation rollouts and robot recordings.

The layout is robomimic's (``data/demo_N/...``, readable by robomimic's tools), extended
with what DAgger and human interventions need::

    data                        attrs: total (steps in all demos), env_args (JSON, robomimic:
                                {"env_name", "type", "env_kwargs"}), format, task, robot,
                                robot_spec_checksum, control_dt, action_size, obs_groups (JSON
                                {group: size}), source ("sim" | "robot"), bundle, expert,
                                created, roboreal_version, meta (JSON of anything else)
    data/demo_N                 attrs: num_samples, success, return, meta (JSON: seed, round,
                                expert, policy, source, ... per-episode provenance)
        obs/<group>             (T, k) float32: observation groups *before* each action
                                (``policy``, ``observation``, ``achieved_goal``, ``desired_goal``,
                                ``critic``: what the env returned)
        next_obs/<group>        (T, k) float32: the groups after each action (the true last
                                observation at the end, not the auto-reset one); optional
        actions                 (T, A) float32: the action that was *executed*
        rewards                 (T,)  float32
        dones                   (T,)  uint8: 1 at the step that ended the episode
        expert_actions          (T, A) float32: the expert's (or human's) label, NaN where the
                                expert gave none (HG-DAgger: only takeover steps carry one)
        policy_actions          (T, A) float32: what the running policy proposed, NaN where no
                                policy ran (pure demonstrations)
        intervention            (T,)  uint8: 1 where the expert's/human's action was executed
                                *instead of* the running policy's (a takeover, or beta-mixing
                                picking the expert); 0 in pure demonstrations
        states                  (T, S) float64: simulator state (MuJoCo FULLPHYSICS), optional
    mask/<filter_key>           robomimic filter keys (e.g. ``train``, ``valid``): demo names

Which steps train a policy (`label_source`, decided once per *file*, so both splits and
``roboreal data info`` use the same rule; `step_labels` applies it to an episode):

* ``"expert"``: the steps with a finite ``expert_actions`` row (a demonstration's every
  step, a DAgger rollout's every visited state, an HG-DAgger session's takeover steps).
  What `labels="auto"` picks whenever the file holds any such row.
* ``"demonstrated"``: `labels="auto"` in a file without a single expert label (e.g. a
  teleoperation dataset made elsewhere, which stores only ``actions``): the executed
  action at the steps where *no policy ran* (``policy_actions`` NaN), i.e. the
  demonstrator's own. A step a policy drove is never a label: a robot session without
  takeovers has none, and is refused by `load_transitions`, not trained on.
* ``"executed"`` (only when asked for): the executed action at every step.

Crash safety (`DatasetWriter`): a running episode is buffered in memory; `end_episode`
writes it whole into an *anonymous* HDF5 group, flushes, then links it into ``data``
under its name, updates ``total`` and flushes (and ``fsync``\\ s) again. A writer killed
mid-episode therefore loses only that episode: every finished episode is readable, the
file is valid (no half-written demo is ever reachable), and the file can be reopened in
append mode to continue. The only window that is not protected is the few milliseconds
of writing the link and the ``total`` attribute after an episode.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np
import torch
import torch.utils.data

FORMAT = "roboreal-dataset/1"
_DEMO = re.compile(r"^demo_(\d+)$")


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or does not match what reads it (names the cause)."""


def _np(x: Any, dtype=np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _json(x: Any) -> str:
    return json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o), sort_keys=True)


def _unjson(x: Any, default: Any = None) -> Any:
    if x is None:
        return default
    if isinstance(x, bytes):
        x = x.decode()
    try:
        return json.loads(x)
    except (TypeError, ValueError):
        return x


# --------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------


def dataset_meta(env=None, *, task: str | None = None, env_overrides: dict | None = None, source: str = "sim",
                 expert: dict | None = None, bundle: dict | None = None, **extra: Any) -> dict:
    """File-level attributes describing where the data comes from.

    From a batched roboreal env (`env`) the task, robot, robot-spec checksum, control
    period and observation/action sizes are filled in; a robot recording passes the
    bundle's manifest summary (`bundle`) and ``source="robot"``.
    """
    import roboreal

    meta: dict[str, Any] = {"format": FORMAT, "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "roboreal_version": roboreal.__version__}
    if env is not None:
        spec = env.spec
        task = task or spec.task
        meta.update(control_dt=float(spec.control_dt), action_size=int(spec.action_size),
                    obs_groups={k: int(v) for k, v in spec.observation_sizes.items()},
                    goal_conditioned=bool(spec.goal_conditioned), max_episode_steps=int(spec.max_episode_steps))
        robot = getattr(env, "robot", None)
        if robot is not None:
            meta.update(robot=robot.name, robot_spec_checksum=robot.checksum)
            meta["joints"] = list(robot.actuated_names)
        if hasattr(env, "observation_layout"):
            meta["observation_layout"] = {g: env.observation_layout(g) for g in spec.observation_sizes
                                          if g in ("policy", "critic")}
    if task is not None:
        meta["task"] = task
        meta["env_args"] = {"env_name": task, "type": "roboreal", "env_kwargs": dict(env_overrides or {})}
    if expert is not None:
        meta["expert"] = expert
    if bundle is not None:
        meta["bundle"] = bundle
    meta.update(extra)
    return meta


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


class DatasetWriter:
    """Append episodes to an HDF5 dataset, one finished episode at a time (crash-safe).

    ::

        with DatasetWriter("demos.hdf5", dataset_meta(env, source="sim")) as w:
            w.add_step(obs_i, action, reward, done, expert_action=action)   # per step, one env
            w.end_episode(success=True, seed=3)                            # writes + flushes

    `mode="w"` creates (or truncates) the file, ``"a"`` continues an existing one
    (numbering goes on after its last demo), ``"x"`` refuses an existing file.
    """

    def __init__(self, path: str | Path, meta: dict | None = None, mode: str = "w", fsync: bool = True,
                 compression: str | None = None, obs_groups: Sequence[str] | None = None):
        if mode not in ("w", "a", "x"):
            raise DatasetError(f"mode must be 'w', 'a' or 'x', not {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.compression = compression
        self.obs_groups = list(obs_groups) if obs_groups is not None else None
        existed = self.path.exists()
        try:
            self.file = h5py.File(self.path, mode)
        except OSError as e:
            raise DatasetError(f"{self.path}: cannot open for writing ({e})") from None
        if "data" in self.file:
            self.data = self.file["data"]
            self.next_index = 1 + max((int(m.group(1)) for m in map(_DEMO.match, self.data) if m), default=-1)
            self.total = int(self.data.attrs.get("total", 0))
            if meta:  # keep what the file says; add what it lacks
                for k, v in meta.items():
                    if k not in self.data.attrs:
                        self.data.attrs[k] = _attr(v)
        else:
            self.data = self.file.create_group("data")
            self.next_index = 0
            self.total = 0
            for k, v in (meta or {"format": FORMAT}).items():
                self.data.attrs[k] = _attr(v)
            if "format" not in self.data.attrs:
                self.data.attrs["format"] = FORMAT
            self.data.attrs["total"] = 0
            if "env_args" not in self.data.attrs:
                self.data.attrs["env_args"] = _json({"env_name": (meta or {}).get("task", ""), "type": "roboreal",
                                                     "env_kwargs": {}})
        self._sync()
        self._steps: list[dict] = []
        self._keys: tuple | None = None
        self.episodes_written = 0
        self._existed = existed

    # ----- steps -----
    def add_step(self, obs: dict, action, reward: float = 0.0, done: bool = False, *, expert_action=None,
                 policy_action=None, intervention: bool = False, next_obs: dict | None = None, state=None) -> None:
        """Buffer one step of the running episode (nothing touches the file until `end_episode`)."""
        groups = self.obs_groups or list(obs)
        missing = [g for g in groups if g not in obs]
        if missing:
            raise DatasetError(f"add_step: observation group {missing[0]!r} missing (got {sorted(obs)})")
        action = _np(action).reshape(-1)
        step = {"obs": {g: _np(obs[g]).reshape(-1) for g in groups}, "actions": action,
                "rewards": np.float32(reward), "dones": np.uint8(bool(done)),
                "expert_actions": np.full_like(action, np.nan) if expert_action is None else _np(expert_action).reshape(-1),
                "policy_actions": np.full_like(action, np.nan) if policy_action is None else _np(policy_action).reshape(-1),
                "intervention": np.uint8(bool(intervention))}
        if next_obs is not None:
            step["next_obs"] = {g: _np(next_obs[g]).reshape(-1) for g in groups}
        if state is not None:
            step["states"] = _np(state, np.float64).reshape(-1)
        keys = (tuple(step["obs"]), "next_obs" in step, "states" in step)
        if self._keys is None:
            self._keys = keys
        elif keys != self._keys:
            raise DatasetError(f"add_step: step {len(self._steps)} has fields {keys}, the episode started with "
                               f"{self._keys} (obs groups, next_obs given, state given)")
        for k in ("expert_actions", "policy_actions"):
            if step[k].shape != action.shape:
                raise DatasetError(f"add_step: {k} has shape {step[k].shape}, actions {action.shape}")
        if self._steps:
            first = self._steps[0]
            for g, v in step["obs"].items():
                if v.shape != first["obs"][g].shape:
                    raise DatasetError(f"add_step: obs/{g} has size {v.size}, earlier steps {first['obs'][g].size}")
            if action.shape != first["actions"].shape:
                raise DatasetError(f"add_step: actions has size {action.size}, earlier steps {first['actions'].size}")
        self._steps.append(step)

    @property
    def running_steps(self) -> int:
        return len(self._steps)

    def discard_episode(self) -> None:
        self._steps = []
        self._keys = None

    def end_episode(self, success: bool | None = None, **attrs: Any) -> str | None:
        """Write the buffered episode whole, flush, and return its name (None if it was empty)."""
        steps, self._steps, self._keys = self._steps, [], None
        if not steps:
            return None
        name = f"demo_{self.next_index}"
        arrays: dict[str, Any] = {k: np.stack([s[k] for s in steps]) for k in
                                  ("actions", "rewards", "dones", "expert_actions", "policy_actions", "intervention")}
        arrays["obs"] = {g: np.stack([s["obs"][g] for s in steps]) for g in steps[0]["obs"]}
        if "next_obs" in steps[0]:
            arrays["next_obs"] = {g: np.stack([s["next_obs"][g] for s in steps]) for g in steps[0]["next_obs"]}
        if "states" in steps[0]:
            arrays["states"] = np.stack([s["states"] for s in steps])
        n = len(steps)
        # 1. the episode, whole, in an anonymous group (unreachable until linked)
        grp = h5py.Group(h5py.h5g.create(self.file.id, None))
        for k, v in arrays.items():
            if isinstance(v, dict):
                sub = grp.create_group(k)
                for g, a in v.items():
                    sub.create_dataset(g, data=a, compression=self.compression)
            else:
                grp.create_dataset(k, data=v, compression=self.compression)
        grp.attrs["num_samples"] = n
        if success is not None:
            grp.attrs["success"] = bool(success)
        grp.attrs["return"] = float(arrays["rewards"].astype(np.float64).sum())
        grp.attrs["meta"] = _json(attrs)
        self._sync()
        # 2. link it and count it
        self.data[name] = grp
        self.total += n
        self.data.attrs["total"] = self.total
        self._sync()
        self.next_index += 1
        self.episodes_written += 1
        return name

    def write_filter_key(self, key: str, demos: Iterable[str]) -> None:
        """robomimic filter key ``mask/<key>``: a named subset of demos (e.g. ``train``/``valid``)."""
        mask = self.file.require_group("mask")
        if key in mask:
            del mask[key]
        mask.create_dataset(key, data=np.array([d.encode() for d in demos], dtype="S"))
        self._sync()

    def set_attrs(self, **attrs: Any) -> None:
        for k, v in attrs.items():
            self.data.attrs[k] = _attr(v)
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        if self.fsync:
            try:
                os.fsync(self.file.id.get_vfd_handle())
            except (OSError, TypeError, ValueError):
                pass

    def close(self) -> None:
        """Close the file. An unfinished episode is discarded (`end_episode` it first to keep it)."""
        if getattr(self, "file", None) is not None and self.file.id.valid:
            self.discard_episode()
            self._sync()
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attr(v: Any):
    if isinstance(v, (dict, list, tuple)) or v is None:
        return _json(v)
    return v


class BatchedRecorder:
    """Records a batched env's steps into a `DatasetWriter`, one episode per finished env episode.

    Call `record(obs, actions, reward, terminated, truncated, info, ...)` after every
    ``env.step`` with the observation the actions were computed from; an env's episode is
    written when it ends (``info["final_observation"]`` becomes its last ``next_obs``).
    ``max_episodes`` stops writing after that many episodes (the rest are dropped).
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
                name = self.writer.end_episode(success=success, **attrs)
                self.written += 1
                self.results.append({
                    "name": name, "length": len(steps), "success": success,
                    "return": float(sum(s["reward"] for s in steps)),
                    "labels": sum(s["expert_action"] is not None for s in steps),
                    "interventions": sum(s["intervention"] for s in steps)})
                names.append(name)
        return names


# --------------------------------------------------------------------------------------
# Labels: which steps an imitation learner may learn from
# --------------------------------------------------------------------------------------

LABEL_MODES = ("auto", "expert", "executed")  # what a user asks for (BCConfig.labels)
LABEL_SOURCES = ("expert", "demonstrated", "executed")  # what a file's labels are, once decided

_LABEL_SOURCE_TEXT = {
    "expert": "finite expert_actions rows (an expert's or human's label, e.g. at an HG-DAgger takeover)",
    "demonstrated": "executed actions of steps no policy ran (the file has no expert_actions label at all)",
    "executed": "the executed action of every step",
}


def describe_label_source(source: str) -> str:
    """One line saying which steps count as labels under `source` (for CLI output and errors)."""
    return _LABEL_SOURCE_TEXT[source]


def label_source(expert_actions: Iterable[np.ndarray], labels: str = "auto") -> str:
    """Decide, once for a whole file, where its labels come from (one of `LABEL_SOURCES`).

    `expert_actions`: the file's episodes' ``expert_actions`` arrays (all of them: deciding
    per split is how a validation split without takeovers once turned the policy's own
    actions into "expert" labels). ``labels="auto"`` gives ``"expert"`` when any row is
    finite, else ``"demonstrated"``; ``"expert"``/``"executed"`` are taken as asked.
    """
    if labels not in LABEL_MODES and labels not in LABEL_SOURCES:
        raise DatasetError(f"labels must be one of {', '.join(repr(m) for m in LABEL_MODES)}, not {labels!r}")
    if labels != "auto":
        return labels
    any_expert = any(np.isfinite(np.asarray(e)).all(axis=-1).any() for e in expert_actions)
    return "expert" if any_expert else "demonstrated"


def step_labels(actions: np.ndarray, expert_actions: np.ndarray, policy_actions: np.ndarray,
                source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (T, A), labelled (T,) bool)`` of one episode under a decided `source`.

    Unlabelled rows of ``labels`` are NaN, so a label can never be read by mistake.
    ``"demonstrated"`` labels a step only where no policy proposed an action: an executed
    action a policy chose is the policy's own, never an expert's.
    """
    actions = np.asarray(actions, dtype=np.float32)
    if source == "expert":
        labels = np.asarray(expert_actions, dtype=np.float32)
        labelled = np.isfinite(labels).all(axis=-1)
    elif source == "demonstrated":
        no_policy = ~np.isfinite(np.asarray(policy_actions, dtype=np.float32)).any(axis=-1)
        labelled = no_policy & np.isfinite(actions).all(axis=-1)
        labels = actions
    elif source == "executed":
        labels, labelled = actions, np.isfinite(actions).all(axis=-1)
    else:
        raise DatasetError(f"label source must be one of {LABEL_SOURCES}, not {source!r}")
    labels = np.where(labelled[:, None], labels, np.nan).astype(np.float32)
    return labels, labelled


def no_labels_reason(path: str | Path, source: str, episodes: int, steps: int) -> str:
    """Why a file gives no labelled step (what was looked for, where), for a `DatasetError`."""
    where = f"{path}: no labelled step in its {episodes} episodes ({steps} steps)"
    if source == "demonstrated":
        return (f"{where}: no finite expert_actions row (no expert or human labelled a step: a session without "
                f"takeovers), and a policy proposed the action at every step (policy_actions recorded), so the "
                f"executed actions are the policy's own, which are never labels; record a session in which a human "
                f"takes over, or add demonstrations")
    if source == "expert":
        return f"{where}: looked for finite expert_actions rows (an expert's or human's label), every one is NaN"
    return f"{where}: looked for {describe_label_source(source)}"


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------


@dataclass
class Episode:
    name: str
    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    expert_actions: np.ndarray
    policy_actions: np.ndarray
    intervention: np.ndarray
    next_obs: dict[str, np.ndarray] | None = None
    states: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def labeled(self) -> np.ndarray:
        """(T,) bool: steps that carry an expert label."""
        return np.isfinite(self.expert_actions).all(axis=-1)

    @property
    def success(self) -> bool | None:
        return self.attrs.get("success")


class DatasetReader:
    """Read a dataset written by `DatasetWriter` (or a robomimic file).

    Demos that cannot be read (a file damaged outside the writer's protection) are
    skipped with a warning and listed in `skipped`, so one bad episode loses only itself.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise DatasetError(f"{self.path}: not a readable HDF5 file ({e})") from None
        if "data" not in self.file:
            self.file.close()
            raise DatasetError(f"{self.path}: no 'data' group (not a robomimic/roboreal dataset)")
        self.data = self.file["data"]
        self.meta = {k: _unjson(v) if isinstance(v, (str, bytes)) else _py(v) for k, v in self.data.attrs.items()}
        self.skipped: dict[str, str] = {}
        names = sorted((n for n in self.data if _DEMO.match(n)), key=lambda n: int(_DEMO.match(n).group(1)))
        self.names: list[str] = []
        for n in names:
            problem = self._check(n)
            if problem:
                self.skipped[n] = problem
                warnings.warn(f"{self.path}: skipping {n}: {problem}", stacklevel=2)
            else:
                self.names.append(n)

    def _check(self, name: str) -> str | None:
        try:
            g = self.data[name]
            n = int(g["actions"].shape[0])
            for k in ("rewards", "dones"):
                if k in g and g[k].shape[0] != n:
                    return f"{k} has {g[k].shape[0]} steps, actions {n}"
            if "obs" not in g:
                return "no obs group"
            for k, ds in g["obs"].items():
                if ds.shape[0] != n:
                    return f"obs/{k} has {ds.shape[0]} steps, actions {n}"
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            return f"unreadable ({e})"
        return None

    # ----- summary -----
    @property
    def task(self) -> str | None:
        t = self.meta.get("task")
        if t:
            return t
        env_args = self.meta.get("env_args")
        return env_args.get("env_name") if isinstance(env_args, dict) else None

    @property
    def env_kwargs(self) -> dict:
        env_args = self.meta.get("env_args")
        return dict(env_args.get("env_kwargs") or {}) if isinstance(env_args, dict) else {}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        for n in self.names:
            yield self.episode(n)

    def length(self, name: str) -> int:
        return int(self.data[name]["actions"].shape[0])

    def episode_attrs(self, name: str) -> dict:
        a = self.data[name].attrs
        out = {k: _unjson(v) if isinstance(v, (str, bytes)) else _py(v) for k, v in a.items() if k != "meta"}
        meta = _unjson(a.get("meta"), {})
        if isinstance(meta, dict):
            out.update({k: v for k, v in meta.items() if k not in out})
        return out

    def episode(self, name: str | int) -> Episode:
        if isinstance(name, int):
            name = self.names[name]
        g = self.data[name]
        n = int(g["actions"].shape[0])
        a_size = int(g["actions"].shape[1]) if g["actions"].ndim > 1 else 1
        actions = np.asarray(g["actions"][()], dtype=np.float32).reshape(n, a_size)

        def get(key, default):
            return np.asarray(g[key][()]) if key in g else default

        return Episode(
            name=name, obs={k: np.asarray(v[()], dtype=np.float32) for k, v in g["obs"].items()}, actions=actions,
            rewards=get("rewards", np.zeros(n, np.float32)).astype(np.float32).reshape(n),
            dones=get("dones", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            expert_actions=get("expert_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            policy_actions=get("policy_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            intervention=get("intervention", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            next_obs={k: np.asarray(v[()], dtype=np.float32) for k, v in g["next_obs"].items()} if "next_obs" in g else None,
            states=np.asarray(g["states"][()]) if "states" in g else None,
            attrs=self.episode_attrs(name))

    def _array(self, name: str, key: str) -> np.ndarray:
        """``key`` of demo `name` as (T, A) float32 (NaN when the demo lacks it, as `episode` reads it)."""
        g = self.data[name]
        n = int(g["actions"].shape[0])
        if key not in g:
            return np.full((n, int(np.prod(g["actions"].shape[1:])) or 1), np.nan, np.float32)
        return np.asarray(g[key][()], dtype=np.float32).reshape(n, -1)

    def label_source(self, labels: str = "auto") -> str:
        """Where this file's training labels come from, decided once for the whole file (see
        `label_source`); `summary`, ``roboreal data info`` and `load_transitions` all ask here."""
        return label_source((self._array(n, "expert_actions") for n in self.names), labels)

    def label_counts(self, labels: str = "auto") -> dict[str, int]:
        """Labelled steps per demo under the file's `label_source` (what training learns from)."""
        source = self.label_source(labels)
        counts = {}
        for n in self.names:
            _, labelled = step_labels(self._array(n, "actions"), self._array(n, "expert_actions"),
                                      self._array(n, "policy_actions"), source)
            counts[n] = int(labelled.sum())
        return counts

    def summary(self) -> dict:
        rows = []
        source = self.label_source()
        label_counts = self.label_counts()
        for n in self.names:
            g = self.data[n]
            attrs = self.episode_attrs(n)
            length = int(g["actions"].shape[0])
            labels = label_counts[n]
            interventions = int(np.asarray(g["intervention"][()]).sum()) if "intervention" in g else 0
            rows.append({"name": n, "length": length, "success": attrs.get("success"),
                         "return": attrs.get("return"), "labels": labels, "interventions": interventions,
                         "source": attrs.get("source", self.meta.get("source")), "round": attrs.get("round")})
        lengths = [r["length"] for r in rows]
        succ = [bool(r["success"]) for r in rows if r["success"] is not None]
        return {
            "path": str(self.path), "task": self.task, "robot": self.meta.get("robot"),
            "source": self.meta.get("source"), "episodes": len(rows), "steps": int(sum(lengths)),
            "total_attr": self.meta.get("total"), "mean_length": float(np.mean(lengths)) if lengths else 0.0,
            "min_length": min(lengths) if lengths else 0, "max_length": max(lengths) if lengths else 0,
            "success_rate": float(np.mean(succ)) if succ else None, "labels": sum(r["labels"] for r in rows),
            "label_source": source,
            "interventions": sum(r["interventions"] for r in rows),
            "episodes_with_interventions": sum(r["interventions"] > 0 for r in rows),
            "obs_groups": {k: int(v.shape[-1]) for k, v in self.data[self.names[0]]["obs"].items()} if rows else {},
            "action_size": int(self.data[self.names[0]]["actions"].shape[-1]) if rows else None,
            "skipped": dict(self.skipped), "rows": rows,
        }

    # ----- splits -----
    def filter_key(self, key: str) -> list[str] | None:
        if "mask" in self.file and key in self.file["mask"]:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in self.file["mask"][key][()]]
        return None

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
        """Train/validation demo names, *by episode* (no episode is in both).

        The file's robomimic filter keys ``mask/train`` + ``mask/valid`` win when present;
        otherwise a seeded shuffle puts ``round(val_fraction * episodes)`` episodes (at
        least one when there are two or more and ``val_fraction > 0``) into validation.
        """
        train, valid = self.filter_key("train"), self.filter_key("valid")
        if train is not None and valid is not None:
            keep = set(self.names)
            return [n for n in train if n in keep], [n for n in valid if n in keep]
        if not 0.0 <= val_fraction < 1.0:
            raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
        names = list(self.names)
        order = np.random.default_rng(seed).permutation(len(names))
        n_val = int(round(val_fraction * len(names)))
        if val_fraction > 0 and n_val == 0 and len(names) >= 2:
            n_val = 1
        val = sorted((names[i] for i in order[:n_val]), key=self.names.index)
        train = sorted((names[i] for i in order[n_val:]), key=self.names.index)
        return train, val

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


# --------------------------------------------------------------------------------------
# Into torch: transitions for imitation learning
# --------------------------------------------------------------------------------------


@dataclass
class TransitionSet:
    """All steps of some episodes, flattened, with what imitation learning needs.

    ``obs``: {group: (M, k)}; ``labels``: (M, A) expert labels (NaN where none);
    ``labeled``: (M,) bool; ``episode``: (M,) episode id; ``step``: (M,) step within it;
    ``episode_end``: (M,) index one past the episode's last step (for goal relabeling);
    ``next_achieved``: (M, g) achieved goal *after* each step (goal tasks, else None);
    ``actions``: (M, A) executed actions; ``names``: episode id -> "file:demo_N".
    """

    obs: dict[str, torch.Tensor]
    labels: torch.Tensor
    labeled: torch.Tensor
    episode: torch.Tensor
    step: torch.Tensor
    episode_end: torch.Tensor
    actions: torch.Tensor
    next_achieved: torch.Tensor | None
    names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self.labeled.sum())

    @property
    def num_episodes(self) -> int:
        return len(self.names)

    def torch_dataset(self, obs_group: str = "policy") -> torch.utils.data.TensorDataset:
        """``(obs[obs_group], label)`` pairs of the labelled steps, for a `torch.utils.data.DataLoader`."""
        idx = self.labeled.nonzero().squeeze(-1)
        return torch.utils.data.TensorDataset(self.obs[obs_group][idx], self.labels[idx])

    def select_episodes(self, ids: Sequence[int]) -> "TransitionSet":
        ids = list(ids)
        mask = torch.isin(self.episode, torch.tensor(ids, dtype=torch.long)) if ids else \
            torch.zeros(len(self), dtype=torch.bool)
        return _subset(self, mask)

    @staticmethod
    def concat(sets: Sequence["TransitionSet"]) -> "TransitionSet":
        """One set from several (episode ids renumbered). Observation groups: those all sets have
        (a robot recording may store only ``policy``; simulation data has every group)."""
        sets = [s for s in sets if s is not None]
        if not sets:
            raise DatasetError("no transitions to combine")
        offset_ep, offset_idx = 0, 0
        parts = []
        names: list[str] = []
        for s in sets:
            parts.append((s, offset_ep, offset_idx))
            names += s.names
            offset_ep += len(s.names)
            offset_idx += len(s)
        groups = [g for g in sets[0].obs if all(g in s.obs for s in sets)]
        if not groups:
            raise DatasetError(f"the datasets share no observation group ({[sorted(s.obs) for s in sets]})")
        for g in groups:
            sizes = {int(s.obs[g].shape[1]) for s in sets}
            if len(sizes) > 1:
                raise DatasetError(f"observation group {g!r} has sizes {sorted(sizes)} in different datasets")
        return TransitionSet(
            obs={g: torch.cat([s.obs[g] for s in sets]) for g in groups},
            labels=torch.cat([s.labels for s in sets]), labeled=torch.cat([s.labeled for s in sets]),
            episode=torch.cat([s.episode + oe for s, oe, _ in parts]), step=torch.cat([s.step for s in sets]),
            episode_end=torch.cat([s.episode_end + oi for s, _, oi in parts]),
            actions=torch.cat([s.actions for s in sets]),
            next_achieved=torch.cat([s.next_achieved for s in sets]) if all(s.next_achieved is not None for s in sets)
            else None,
            names=names)


def _subset(ts: TransitionSet, mask: torch.Tensor) -> TransitionSet:
    idx = mask.nonzero().squeeze(-1)
    old_eps = sorted(set(ts.episode[idx].tolist()))
    remap = {e: i for i, e in enumerate(old_eps)}
    new_ep = torch.tensor([remap[e] for e in ts.episode[idx].tolist()], dtype=torch.long)
    # episode_end: recompute from the new contiguous layout
    new_end = torch.zeros(len(idx), dtype=torch.long)
    pos = 0
    for e in range(len(old_eps)):
        n = int((new_ep == e).sum())
        new_end[pos:pos + n] = pos + n
        pos += n
    return TransitionSet(
        obs={g: v[idx] for g, v in ts.obs.items()}, labels=ts.labels[idx], labeled=ts.labeled[idx], episode=new_ep,
        step=ts.step[idx], episode_end=new_end, actions=ts.actions[idx],
        next_achieved=ts.next_achieved[idx] if ts.next_achieved is not None else None,
        names=[ts.names[e] for e in old_eps])


def episodes_to_transitions(episodes: Sequence[Episode], labels: str = "auto", prefix: str = "") -> TransitionSet:
    """Flatten episodes (in order, contiguous) into a `TransitionSet`.

    ``labels``: a decided source (``"expert"``, ``"demonstrated"``, ``"executed"``: see
    `label_source` and `step_labels`), or ``"auto"`` to decide over `episodes` themselves,
    which is right only when they are a whole file: a split of a file must get the source
    decided for the file (`DatasetReader.label_source`), as `load_transitions` passes it.
    """
    source = label_source((ep.expert_actions for ep in episodes), labels)
    obs: dict[str, list] = {}
    lab, labeled, ep_id, step, end, acts, nach = [], [], [], [], [], [], []
    pos = 0
    have_next = all(ep.next_obs is not None and "achieved_goal" in ep.next_obs for ep in episodes)
    groups = set(episodes[0].obs) if episodes else set()
    for i, ep in enumerate(episodes):
        if set(ep.obs) != groups:
            raise DatasetError(f"{ep.name}: observation groups {sorted(ep.obs)} differ from {sorted(groups)}")
        n = len(ep)
        for g, v in ep.obs.items():
            obs.setdefault(g, []).append(v)
        ep_labels, ep_labelled = step_labels(ep.actions, ep.expert_actions, ep.policy_actions, source)
        lab.append(ep_labels)
        labeled.append(ep_labelled)
        acts.append(ep.actions)
        ep_id.append(np.full(n, i))
        step.append(np.arange(n))
        end.append(np.full(n, pos + n))
        if "achieved_goal" in ep.obs:
            if have_next:
                nach.append(ep.next_obs["achieved_goal"])
            else:  # the next step's achieved goal; the last step keeps its own
                ag = ep.obs["achieved_goal"]
                nach.append(np.concatenate([ag[1:], ag[-1:]]) if n > 1 else ag)
        pos += n
    t = lambda x, dt=torch.float32: torch.as_tensor(np.concatenate(x) if x else np.zeros(0), dtype=dt)  # noqa: E731
    a_size = episodes[0].actions.shape[1] if episodes else 0
    return TransitionSet(
        obs={g: t(v) for g, v in obs.items()},
        labels=t(lab).reshape(-1, a_size), labeled=t(labeled, torch.bool), episode=t(ep_id, torch.long),
        step=t(step, torch.long), episode_end=t(end, torch.long), actions=t(acts).reshape(-1, a_size),
        next_achieved=t(nach) if len(nach) == len(episodes) and nach else None,
        names=[f"{prefix}{ep.name}" for ep in episodes])


def load_transitions(paths: str | Path | Sequence[str | Path], val_fraction: float = 0.1, seed: int = 0,
                     labels: str = "auto", max_episodes: int | None = None
                     ) -> tuple[TransitionSet, TransitionSet | None, dict]:
    """Train/validation `TransitionSet`\\ s from one or more dataset files, split by episode.

    Which steps are labels is decided once per file (`DatasetReader.label_source`, the rule
    ``roboreal data info`` counts with) and applied to both splits, so train + validation
    labels of a file equal its ``data info`` count. A file without a labelled step is
    skipped with a warning naming it; when no file has one, `DatasetError` says why.

    Returns ``(train, val, meta)``; ``val`` is None when no episode went to validation;
    ``meta`` is the first file's attributes plus ``files``, ``train_episodes``,
    ``val_episodes``, ``train_labels``, ``val_labels`` and ``label_sources`` ({file: source}).
    ``max_episodes`` keeps only each file's first episodes (budgets).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DatasetError("no dataset files given")
    trains, vals = [], []
    meta: dict = {}
    sources: dict[str, str] = {}
    unlabelled: list[str] = []
    for p in paths:
        with DatasetReader(p) as r:
            if not r.names:
                raise DatasetError(f"{p}: no readable episodes")
            if not meta:
                meta = dict(r.meta)
                meta["task"] = r.task
                meta["env_kwargs"] = r.env_kwargs
            source = r.label_source(labels)  # the whole file's rule, before any split or budget
            sources[str(p)] = source
            if max_episodes is not None:
                r.names = r.names[:max_episodes]
            tr, va = r.split(val_fraction, seed)
            prefix = f"{Path(p).name}:"
            tr_set = episodes_to_transitions([r.episode(n) for n in tr], source, prefix=prefix) if tr else None
            va_set = episodes_to_transitions([r.episode(n) for n in va], source, prefix=prefix) if va else None
            if sum(s.num_labels for s in (tr_set, va_set) if s is not None) == 0:
                unlabelled.append(no_labels_reason(p, source, len(r.names), sum(r.length(n) for n in r.names)))
            if tr_set is not None:
                trains.append(tr_set)
            if va_set is not None:
                vals.append(va_set)
    if len(unlabelled) == len(paths):
        raise DatasetError("nothing to train on: " + "; ".join(unlabelled))
    for reason in unlabelled:  # others have labels: this file contributes none, say so
        warnings.warn(reason, stacklevel=2)
    if not trains:
        raise DatasetError(f"no training episodes (val_fraction={val_fraction} put every episode into validation)")
    meta["files"] = [str(p) for p in paths]
    meta["label_sources"] = sources
    train = TransitionSet.concat(trains)
    val = TransitionSet.concat(vals) if vals else None
    meta["train_episodes"], meta["val_episodes"] = train.num_episodes, (val.num_episodes if val else 0)
    meta["train_labels"], meta["val_labels"] = train.num_labels, (val.num_labels if val else 0)
    return train, val, meta


def require_labels(paths: str | Path | Sequence[str | Path], labels: str = "auto") -> dict[str, int]:
    """Labelled steps per file (each file's own `DatasetReader.label_source`, as ``data info``
    counts them); `DatasetError` naming every file and what was looked for when none has one."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    counts: dict[str, int] = {}
    reasons = []
    for p in paths:
        with DatasetReader(p) as r:
            counts[str(p)] = sum(r.label_counts(labels).values())
            if counts[str(p)] == 0:
                reasons.append(no_labels_reason(p, r.label_source(labels), len(r.names),
                                                sum(r.length(n) for n in r.names)))
    if not paths or len(reasons) == len(paths):
        raise DatasetError("nothing to train on: " + ("; ".join(reasons) or "no dataset files given"))
    return counts


def check_compatible(meta: dict, env, obs_group: str = "policy") -> None:
    """Refuse a dataset whose action size or observation group size differs from `env`'s."""
    spec = env.spec
    a = meta.get("action_size")
    if a is not None and int(a) != int(spec.action_size):
        raise DatasetError(f"dataset actions have size {a}, task {spec.task} has {spec.action_size}")
    groups = meta.get("obs_groups") or {}
    if obs_group in groups and obs_group in spec.observation_sizes and \
            int(groups[obs_group]) != int(spec.observation_sizes[obs_group]):
        raise DatasetError(f"dataset observation group {obs_group!r} has size {groups[obs_group]}, task {spec.task} "
                           f"has {spec.observation_sizes[obs_group]}")
    if meta.get("robot") and getattr(env, "robot", None) is not None and meta["robot"] != env.robot.name:
        raise DatasetError(f"dataset was recorded on robot {meta['robot']!r}, task {spec.task} uses {env.robot.name!r}")


# --------------------------------------------------------------------------------------
# Export: a LeRobot-style layout
# --------------------------------------------------------------------------------------


def export_lerobot(path: str | Path, out: str | Path, fps: float | None = None, obs_group: str = "policy") -> dict:
    """Write a LeRobot-v2-style dataset directory from an HDF5 dataset.

    ::

        meta/info.json          codebase_version "v2.0", fps, features (dtype/shape/names), totals
        meta/episodes.jsonl     {"episode_index", "tasks", "length", "success"} per line
        meta/tasks.jsonl        {"task_index": 0, "task": <task>}
        data/chunk-000/episode_000000.parquet   (with pyarrow) or .npz (without): columns
            observation.state (T, k), action (T, A), next.reward, next.done, next.success,
            timestamp, frame_index, episode_index, index, task_index,
            and observation.<group> for every other stored group,
            expert_action, policy_action, intervention (roboreal extensions)

    The parquet files are what LeRobot's loader reads; the ``.npz`` fallback holds the
    same columns (``numpy.load``) where pyarrow is not installed.
    """
    out = Path(out)
    try:
        import pyarrow as pa  # noqa: F401
        import pyarrow.parquet as pq  # noqa: F401

        use_parquet = True
    except ImportError:
        use_parquet = False
    (out / "meta").mkdir(parents=True, exist_ok=True)
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    with DatasetReader(path) as r:
        fps = fps or (1.0 / float(r.meta["control_dt"]) if r.meta.get("control_dt") else 25.0)
        task = r.task or "unknown"
        index = 0
        episodes_meta = []
        features: dict = {}
        for ep_i, name in enumerate(r.names):
            ep = r.episode(name)
            n = len(ep)
            cols: dict[str, np.ndarray] = {
                "observation.state": ep.obs[obs_group] if obs_group in ep.obs else next(iter(ep.obs.values())),
                "action": ep.actions,
                "next.reward": ep.rewards, "next.done": ep.dones.astype(bool),
                "next.success": np.array([bool(ep.success)] * n) if ep.success is not None else np.zeros(n, bool),
                "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, ep_i, dtype=np.int64), "index": np.arange(index, index + n, dtype=np.int64),
                "task_index": np.zeros(n, dtype=np.int64), "expert_action": ep.expert_actions,
                "policy_action": ep.policy_actions, "intervention": ep.intervention.astype(bool)}
            for g, v in ep.obs.items():
                if g != obs_group:
                    cols[f"observation.{g}"] = v
            if not features:
                features = {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:]) or [1]} for k, v in cols.items()}
            stem = out / "data" / "chunk-000" / f"episode_{ep_i:06d}"
            if use_parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.table({k: (list(v) if v.ndim > 1 else v) for k, v in cols.items()})
                pq.write_table(table, str(stem) + ".parquet")
            else:
                np.savez(str(stem) + ".npz", **cols)
            episodes_meta.append({"episode_index": ep_i, "tasks": [task], "length": n, "success": ep.success,
                                  "source_demo": name})
            index += n
        info = {"codebase_version": "v2.0", "robot_type": r.meta.get("robot"), "fps": fps,
                "total_episodes": len(r.names), "total_frames": index, "total_tasks": 1, "chunks_size": 1000,
                "total_chunks": 1, "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}."
                                               + ("parquet" if use_parquet else "npz"),
                "features": features, "source": str(path), "roboreal": {k: r.meta.get(k) for k in
                                                                         ("task", "robot", "source", "format")}}
    with open(out / "meta" / "info.json", "w") as f:
        json.dump(info, f, indent=2, default=str)
    with open(out / "meta" / "episodes.jsonl", "w") as f:
        for e in episodes_meta:
            f.write(json.dumps(e) + "\n")
    with open(out / "meta" / "tasks.jsonl", "w") as f:
        f.write(json.dumps({"task_index": 0, "task": task}) + "\n")
    return {"episodes": len(episodes_meta), "frames": index, "format": "parquet" if use_parquet else "npz",
            "out": str(out)}


def format_rate(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"
