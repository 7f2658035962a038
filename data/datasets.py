"""Demonstration datasets: one HDF5 format for simulation rollouts and robot recordings.

The layout is robomimic's (``data/demo_N/...``: what robomimic's ``SequenceDataset`` and
``get_env_metadata_from_dataset`` read, with its default config), extended with what
DAgger and human interventions need::

    data                        attrs: total (steps in all demos), env_args (JSON, robomimic's
                                {"env_name": task, "type": 2 (robomimic's EnvType.GYM_TYPE),
                                "env_kwargs": overrides}), roboreal_env (JSON, roboreal's own:
                                {"task", "env_kwargs", "make"}), format, task, robot,
                                robot_spec_checksum, control_dt, action_size, obs_groups (JSON
                                {group: size}), source ("sim" | "robot"), bundle, expert,
                                created, roboreal_version, meta (JSON of anything else)
    data/demo_N                 attrs: num_samples (exact step count), success (bool; *absent*
                                when unknown), success_source ("env" | "operator" | ...; with
                                success), return (sum of rewards; absent when a reward is
                                unknown), next_obs_last ("observed" | "repeated"), meta (JSON:
                                seed, round, expert, policy, source, ... per-episode provenance)
        obs/<group>             (T, k) float32: observation groups *before* each action
                                (``policy``, ``observation``, ``achieved_goal``, ``desired_goal``,
                                ``critic``: what the env returned)
        next_obs/<group>        (T, k) float32: the groups after each action. The last row is the
                                episode's true final observation when the writer had it
                                (``next_obs_last="observed"``: simulation, `BatchedRecorder`),
                                else a copy of the last ``obs`` row (``"repeated"``: a robot
                                session ends without an observation after its last step)
        actions                 (T, A) float32: the action that was *executed*
        rewards                 (T,)  float32: NaN where unknown (a robot has no reward function)
        dones                   (T,)  uint8: 1 at the step that ended the episode
        expert_actions          (T, A) float32: the expert's (or human's) label, NaN where the
                                expert gave none (HG-DAgger: only takeover steps carry one)
        policy_actions          (T, A) float32: what the running policy proposed, NaN where no
                                policy ran (pure demonstrations)
        intervention            (T,)  uint8: 1 where the expert's/human's action was executed
                                *instead of* the running policy's (a takeover, or beta-mixing
                                picking the expert); 0 in pure demonstrations
        states                  (T, S) float64: simulator state (MuJoCo FULLPHYSICS), optional
    mask/train, mask/valid      robomimic filter keys (demo names, bytes), written on `close`:
                                a seeded split (`train_valid_split`, 10 % validation, seed 0),
                                marked ``roboreal_split`` so that `DatasetReader.split` applies
                                the caller's fraction/seed instead; keys a user wrote
                                (`write_filter_key`, robomimic's scripts) are kept and used as is

Unknown is stored as unknown, never as 0/False: a robot recording's rewards are NaN and its
``success`` attribute is absent unless the operator set it (``~/set_success``:
``success_source="operator"``). `DatasetReader.summary` (``roboreal data info``) says how
many episodes know each field. Files of format ``roboreal-dataset/1`` (before this rule)
stored 0 for a robot's unknown rewards: their robot rewards read as NaN. Imitation learning
(`load_transitions`, BC, DAgger) reads no reward; offline RL on a robot recording needs its
rewards computed first (not done here).

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

Reading a file that is being written: not HDF5 SWMR *writing* (SWMR forbids creating
groups once it is on, and every episode is a new group; a SWMR writer also needs the
``latest`` file format, whose "open for writing" flag makes a killed writer's file
unreadable until ``h5clear``). Instead the writer opens the file *without* HDF5's file
lock (a second writer is refused by an fcntl lock that readers never take), so any reader
(h5py's defaults, robomimic's ``swmr=True`` open, `DatasetReader`) can open it while it
records. Between episodes nothing on disk changes and a reader sees every finished
episode. `DatasetReader` is also safe while episodes land: it opens with SWMR *read*
access (objects past the end of file its superblock announced stay readable), looks each
demo up once, leaves out demos linked after it opened that it cannot read yet
(`DatasetReader.unfinished`: past the ``total`` it read) and retries the open when it
lands on a half-written episode. A reader that stays open does not see later episodes:
open the file again.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import struct
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np
import torch
import torch.utils.data

FORMAT = "roboreal-dataset/2"  # /2: unknown rewards are NaN (/1 stored 0 for a robot's unknown rewards)
_DEMO = re.compile(r"^demo_(\d+)$")

# robomimic's ``EnvType`` (robomimic/envs/env_base.py: ROBOSUITE_TYPE = 1, GYM_TYPE = 2,
# IG_MOMART_TYPE = 3). ``env_args["type"]`` must be one of them or robomimic's
# `get_env_class` raises; a roboreal task is closest to a Gym env (``env_name`` + kwargs).
ROBOMIMIC_GYM_TYPE = 2
ROBOMIMIC_ENV_TYPES = (1, 2, 3)

# The split the writer stores as ``mask/train`` + ``mask/valid`` (and `DatasetReader.split`'s default).
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
_AUTO_SPLIT_ATTR = "roboreal_split"  # on mask/<key> datasets the writer made (not a user's filter key)


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
        meta["env_args"] = robomimic_env_args(task, env_overrides)
        meta["roboreal_env"] = roboreal_env_args(task, env_overrides)
    if expert is not None:
        meta["expert"] = expert
    if bundle is not None:
        meta["bundle"] = bundle
    meta.update(extra)
    return meta


def robomimic_env_args(task: str | None, env_overrides: dict | None = None) -> dict:
    """``data.attrs["env_args"]`` as robomimic reads it: its integer env type, the task as name."""
    return {"env_name": task or "", "type": ROBOMIMIC_GYM_TYPE, "env_kwargs": dict(env_overrides or {})}


def roboreal_env_args(task: str | None, env_overrides: dict | None = None) -> dict:
    """``data.attrs["roboreal_env"]``: how roboreal remakes the env (``roboreal.envs.make(task, **env_kwargs)``)."""
    return {"task": task, "env_kwargs": dict(env_overrides or {}), "make": "roboreal.envs.make"}


def _split_env_args(meta: dict) -> dict:
    """`meta` with ``env_args`` in robomimic's form, a non-robomimic one (format /1's ``type:
    "roboreal"``) moved into ``roboreal_env`` so no provenance is lost."""
    meta = dict(meta)
    env_args = _unjson(meta.get("env_args"))
    if isinstance(env_args, dict) and env_args.get("type") not in ROBOMIMIC_ENV_TYPES:
        meta.setdefault("roboreal_env", roboreal_env_args(env_args.get("env_name") or meta.get("task"),
                                                          env_args.get("env_kwargs")))
        meta["env_args"] = robomimic_env_args(env_args.get("env_name") or meta.get("task"), env_args.get("env_kwargs"))
    elif env_args is None:
        meta["env_args"] = robomimic_env_args(meta.get("task"))
    return meta


def train_valid_split(names: Sequence[str], val_fraction: float = DEFAULT_VAL_FRACTION,
                      seed: int = DEFAULT_SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Train/validation demo names by episode: a seeded shuffle puts ``round(val_fraction *
    episodes)`` episodes (at least one when there are two or more and ``val_fraction > 0``)
    into validation. Both lists keep the order of `names`."""
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = list(names)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and n_val == 0 and len(names) >= 2:
        n_val = 1
    val_set = {names[i] for i in order[:n_val]}
    return [n for n in names if n not in val_set], [n for n in names if n in val_set]


# --------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------


class DatasetWriter:
    """Append episodes to an HDF5 dataset, one finished episode at a time (crash-safe).

    ::

        with DatasetWriter("demos.hdf5", dataset_meta(env, source="sim")) as w:
            w.add_step(obs_i, action, reward, done, expert_action=action)   # per step, one env
            w.end_episode(success=True, success_source="env", seed=3)      # writes + flushes

    `mode="w"` creates (or truncates) the file, ``"a"`` continues an existing one
    (numbering goes on after its last demo), ``"x"`` refuses an existing file. Readers may
    open the file while it is written (see the module docstring); a second writer is refused.
    `close` writes the default ``mask/train``/``mask/valid`` split unless a user's keys exist.
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
        self._lock_fd: int | None = None
        if existed and mode == "x":
            raise DatasetError(f"{self.path}: cannot open for writing (the file exists and mode is 'x')")
        if existed:  # before h5py opens (mode "w" truncates): a file another writer holds is left alone
            self._lock_fd = _lock_for_writing(self.path)
        try:
            # no HDF5 file lock: readers (h5py defaults, robomimic) may open the file while it records
            self.file = h5py.File(self.path, mode, locking=False)
        except OSError as e:
            self._unlock()
            raise DatasetError(f"{self.path}: cannot open for writing ({e})") from None
        if self._lock_fd is None:
            try:
                self._lock_fd = _lock_for_writing(self.path)
            except DatasetError:
                self.file.close()
                raise
        if "data" in self.file:
            self.data = self.file["data"]
            self.next_index = 1 + max((int(m.group(1)) for m in map(_DEMO.match, self.data) if m), default=-1)
            self.total = int(self.data.attrs.get("total", 0))
            if meta:  # keep what the file says; add what it lacks
                for k, v in meta.items():
                    if k not in self.data.attrs:
                        self.data.attrs[k] = _attr(v)
            file_meta = {k: self.data.attrs[k] for k in ("env_args", "task", "roboreal_env") if k in self.data.attrs}
            fixed = _split_env_args(file_meta)  # an older file's env_args robomimic refuses: repaired
            for k, v in fixed.items():
                if k not in file_meta or _unjson(file_meta[k]) != _unjson(_attr(v)):
                    self.data.attrs[k] = _attr(v)
        else:
            self.data = self.file.create_group("data")
            self.next_index = 0
            self.total = 0
            for k, v in _split_env_args(meta or {"format": FORMAT}).items():
                self.data.attrs[k] = _attr(v)
            if "format" not in self.data.attrs:
                self.data.attrs["format"] = FORMAT
            self.data.attrs["total"] = 0
        self._sync()
        self._steps: list[dict] = []
        self._keys: tuple | None = None
        self.episodes_written = 0
        self._existed = existed

    # ----- steps -----
    def add_step(self, obs: dict, action, reward: float = math.nan, done: bool = False, *, expert_action=None,
                 policy_action=None, intervention: bool = False, next_obs: dict | None = None, state=None) -> None:
        """Buffer one step of the running episode (nothing touches the file until `end_episode`).

        `reward` defaults to NaN: unknown (a robot has no reward function), never a silent 0.
        """
        groups = self.obs_groups or list(obs)
        missing = [g for g in groups if g not in obs]
        if missing:
            raise DatasetError(f"add_step: observation group {missing[0]!r} missing (got {sorted(obs)})")
        action = _np(action).reshape(-1)
        step = {"obs": {g: _np(obs[g]).reshape(-1) for g in groups}, "actions": action,
                "rewards": np.float32(math.nan if reward is None else reward), "dones": np.uint8(bool(done)),
                "expert_actions": np.full_like(action, np.nan) if expert_action is None else _np(expert_action).reshape(-1),
                "policy_actions": np.full_like(action, np.nan) if policy_action is None else _np(policy_action).reshape(-1),
                "intervention": np.uint8(bool(intervention))}
        if next_obs is not None:
            missing = [g for g in groups if g not in next_obs]
            if missing:
                raise DatasetError(f"add_step: next_obs group {missing[0]!r} missing (got {sorted(next_obs)})")
            step["next_obs"] = {g: _np(next_obs[g]).reshape(-1) for g in groups}
            for g in groups:
                if step["next_obs"][g].shape != step["obs"][g].shape:
                    raise DatasetError(f"add_step: next_obs/{g} has size {step['next_obs'][g].size}, "
                                       f"obs/{g} {step['obs'][g].size}")
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

    def end_episode(self, success: bool | None = None, *, success_source: str | None = None,
                    final_obs: dict | None = None, **attrs: Any) -> str | None:
        """Write the buffered episode whole, flush, and return its name (None if it was empty).

        `success`: None means unknown (no ``success`` attribute is written), never False;
        `success_source` says who decided it (``"env"``, ``"operator"``). Steps added without
        ``next_obs`` get it from the next step's ``obs``; the last step's is `final_obs` when
        given, else a copy of its own ``obs`` (``next_obs_last="repeated"``).
        """
        steps, self._steps, self._keys = self._steps, [], None
        if not steps:
            return None
        name = f"demo_{self.next_index}"
        arrays: dict[str, Any] = {k: np.stack([s[k] for s in steps]) for k in
                                  ("actions", "rewards", "dones", "expert_actions", "policy_actions", "intervention")}
        arrays["obs"] = {g: np.stack([s["obs"][g] for s in steps]) for g in steps[0]["obs"]}
        if "next_obs" in steps[0]:
            arrays["next_obs"] = {g: np.stack([s["next_obs"][g] for s in steps]) for g in steps[0]["next_obs"]}
            next_obs_last = "observed"
        else:  # robomimic reads next_obs by default: the observation each step led to
            last = {g: v[-1:] for g, v in arrays["obs"].items()}
            next_obs_last = "repeated"
            if final_obs is not None:
                last = {}
                for g, v in arrays["obs"].items():
                    if g not in final_obs:
                        raise DatasetError(f"end_episode: final_obs group {g!r} missing (got {sorted(final_obs)})")
                    last[g] = _np(final_obs[g]).reshape(1, -1)
                    if last[g].shape[1] != v.shape[1]:
                        raise DatasetError(f"end_episode: final_obs/{g} has size {last[g].shape[1]}, "
                                           f"obs/{g} {v.shape[1]}")
                next_obs_last = "observed"
            arrays["next_obs"] = {g: np.concatenate([v[1:], last[g]]) for g, v in arrays["obs"].items()}
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
            if success_source is not None:
                grp.attrs["success_source"] = str(success_source)
        rewards = arrays["rewards"].astype(np.float64)
        if np.isfinite(rewards).all():  # a return of unknown rewards is unknown: no attribute
            grp.attrs["return"] = float(rewards.sum())
        grp.attrs["next_obs_last"] = next_obs_last
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
        """robomimic filter key ``mask/<key>``: a named subset of demos (e.g. ``train``/``valid``).

        A ``train`` or ``valid`` key written here replaces the default split `close` writes.
        """
        self._write_mask(key, demos, auto=False)

    def _write_mask(self, key: str, demos: Iterable[str], auto: bool) -> None:
        demos = [str(d) for d in demos]
        unknown = [d for d in demos if d not in self.data]
        if unknown:
            raise DatasetError(f"{self.path}: filter key {key!r} names demos the file lacks: {unknown[:5]}")
        mask = self.file.require_group("mask")
        if key in mask:
            del mask[key]
        ds = mask.create_dataset(key, data=np.array([d.encode() for d in demos], dtype="S"))
        if auto:
            ds.attrs[_AUTO_SPLIT_ATTR] = _json({"val_fraction": DEFAULT_VAL_FRACTION, "seed": DEFAULT_SPLIT_SEED})
        self._sync()

    def write_default_split(self) -> bool:
        """``mask/train`` + ``mask/valid`` from `train_valid_split` over every demo, unless a user's
        ``train``/``valid`` key is there (kept as it is). Returns whether it wrote them."""
        mask = self.file.get("mask")
        if mask is not None and any(k in mask and _AUTO_SPLIT_ATTR not in mask[k].attrs for k in ("train", "valid")):
            return False
        names = sorted((n for n in self.data if _DEMO.match(n)), key=lambda n: int(_DEMO.match(n).group(1)))
        train, valid = train_valid_split(names)
        self._write_mask("train", train, auto=True)
        self._write_mask("valid", valid, auto=True)
        return True

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

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the lock
            self._lock_fd = None

    def close(self) -> None:
        """Write the default split (`write_default_split`) and close the file. An unfinished
        episode is discarded (`end_episode` it first to keep it)."""
        if getattr(self, "file", None) is not None and self.file.id.valid:
            self.discard_episode()
            try:
                self.write_default_split()
            finally:
                self._sync()
                self.file.close()
                self._unlock()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock_for_writing(path: Path) -> int | None:
    """An exclusive fcntl lock on `path`, so a second `DatasetWriter` is refused while HDF5's own
    (flock) lock stays off for readers: Linux keeps the two kinds apart, and readers take no
    fcntl lock. An open-file-description lock where there is one (a plain POSIX lock would
    be dropped when this process closes any other descriptor of the file, as HDF5 does when
    a reader opens it here). The kernel drops it when the writer dies. Returns the
    descriptor holding it (None where files cannot be locked: then nothing is guarded)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        if hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("P") == 8:  # struct flock of 64-bit Linux
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise DatasetError(f"{path}: another DatasetWriter is writing this dataset (it holds the file's "
                               f"write lock); readers may open it, a second writer may not") from None
        return None
    return fd


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
    """Read a dataset written by `DatasetWriter` (or a robomimic file, or an older roboreal one:
    no ``next_obs``, no ``mask``, ``env_args`` of type ``"roboreal"``).

    Demos that cannot be read (a file damaged outside the writer's protection) are
    skipped with a warning and listed in `skipped`, so one bad episode loses only itself.
    The file may be one a `DatasetWriter` is still recording: the reader sees the episodes
    finished when it opened (it opens without HDF5's file lock, and tries again a few times
    when the open, or a demo, fails, which happens when it lands on an episode's write);
    `unfinished` names demos being linked as it opened, left out (see the module docstring).
    """

    OPEN_ATTEMPTS = 8  # a writer appending back to back is mid-write a good share of the time

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file")
        if not h5py.is_hdf5(self.path):  # no HDF5 signature: no point in waiting for a writer
            raise DatasetError(f"{self.path}: not a readable HDF5 file (no HDF5 signature)")
        for attempt in range(self.OPEN_ATTEMPTS):
            last = attempt == self.OPEN_ATTEMPTS - 1
            try:
                self._open()
            except (OSError, RuntimeError) as e:  # h5py's errors for a file it cannot read (yet)
                if getattr(self, "file", None) is not None and self.file.id.valid:
                    self.file.close()
                if last:
                    raise DatasetError(f"{self.path}: not a readable HDF5 file ({e})") from None
            else:
                if not self.skipped or last:
                    break
                self.file.close()
            # a writer's episode takes milliseconds to land; the jitter keeps retries out of step with it
            # (up to ~1.8 s in all: a loaded machine stretches an fsynced episode write)
            time.sleep(float(np.random.default_rng().uniform(0.01, 0.05 * (attempt + 1))))
        for n, problem in self.skipped.items():
            warnings.warn(f"{self.path}: skipping {n}: {problem}", stacklevel=2)

    def _open(self) -> None:
        # No file lock: a recording writer holds none either, and in this process HDF5 refuses to
        # reopen a file with a different locking setting than the writer's. SWMR *read* access
        # (any file format; robomimic opens so too): HDF5 then reads objects past the end of the
        # file as the superblock said when this reader opened it, i.e. episodes a writer linked since
        self.file = h5py.File(self.path, "r", locking=False, swmr=True)
        if "data" not in self.file:
            self.file.close()
            raise DatasetError(f"{self.path}: no 'data' group (not a robomimic/roboreal dataset)")
        self.data = self.file["data"]
        self.meta = {k: _unjson(v) if isinstance(v, (str, bytes)) else _py(v) for k, v in self.data.attrs.items()}
        self.skipped: dict[str, str] = {}
        # each demo's group is looked up once, here: its object never changes after the writer linked
        # it, while ``data``'s own index does, as a writer appends (a later lookup by name could read
        # a half-updated index)
        self._groups: dict[str, h5py.Group] = {}
        self.unfinished: list[str] = []
        names = sorted((n for n in self.data if _DEMO.match(n)), key=lambda n: int(_DEMO.match(n).group(1)))
        self.names: list[str] = []
        total = self.meta.get("total")
        counted = 0  # steps of the readable demos so far, against ``total`` as read on opening
        for n in names:
            problem = self._check(n)
            if problem and isinstance(total, int) and counted >= total:
                # past what ``total`` counted when this reader opened: an episode a writer is linking
                # now (its index read half-updated), not a damaged one: left out, as if opened earlier
                self.unfinished.append(n)
            elif problem:
                self.skipped[n] = problem
            else:
                self.names.append(n)
                counted += self.length(n)

    def _check(self, name: str) -> str | None:
        try:
            g = self._groups[name] = self.data[name]
            n = int(g["actions"].shape[0])
            for k in ("rewards", "dones"):
                if k in g and g[k].shape[0] != n:
                    return f"{k} has {g[k].shape[0]} steps, actions {n}"
            if "obs" not in g:
                return "no obs group"
            for k, ds in g["obs"].items():
                if ds.shape[0] != n:
                    return f"obs/{k} has {ds.shape[0]} steps, actions {n}"
            for k, ds in (g["next_obs"].items() if "next_obs" in g else ()):
                if ds.shape[0] != n:
                    return f"next_obs/{k} has {ds.shape[0]} steps, actions {n}"
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            return f"unreadable ({e})"
        return None

    def _demo(self, name: str) -> h5py.Group:
        group = self._groups.get(name)
        if group is None:
            raise DatasetError(f"{self.path}: no readable demo {name!r} (demos: {len(self.names)}, skipped: "
                               f"{sorted(self.skipped)})")
        return group

    # ----- summary -----
    @property
    def task(self) -> str | None:
        t = self.meta.get("task")
        if t:
            return t
        for key, name in (("roboreal_env", "task"), ("env_args", "env_name")):
            args = self.meta.get(key)
            if isinstance(args, dict) and args.get(name):
                return args[name]
        return None

    @property
    def env_kwargs(self) -> dict:
        """What `roboreal.envs.make` needs besides the task: ``roboreal_env``'s, else ``env_args``'s."""
        for key in ("roboreal_env", "env_args"):
            args = self.meta.get(key)
            if isinstance(args, dict):
                return dict(args.get("env_kwargs") or {})
        return {}

    @property
    def robot_rewards_were_zero_filled(self) -> bool:
        """Format /1 robot recordings stored 0 for their unknown rewards: read as NaN."""
        return self.meta.get("format") == "roboreal-dataset/1" and self.meta.get("source") == "robot"

    def rewards(self, name: str) -> np.ndarray:
        """(T,) float32 rewards of demo `name`: NaN where unknown (none stored, or a /1 robot file's 0s)."""
        g = self._demo(name)
        n = int(g["actions"].shape[0])
        if "rewards" not in g or self.robot_rewards_were_zero_filled:
            return np.full(n, np.nan, np.float32)
        return np.asarray(g["rewards"][()], dtype=np.float32).reshape(n)

    def known(self, name: str) -> dict[str, bool]:
        """Which labels demo `name` knows: ``rewards`` (every step's), ``success``, ``next_obs``."""
        g = self._demo(name)
        return {"rewards": bool(np.isfinite(self.rewards(name)).all()), "success": "success" in g.attrs,
                "next_obs": "next_obs" in g}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        for n in self.names:
            yield self.episode(n)

    def length(self, name: str) -> int:
        return int(self._demo(name)["actions"].shape[0])

    def episode_attrs(self, name: str) -> dict:
        a = self._demo(name).attrs
        out = {k: _unjson(v) if isinstance(v, (str, bytes)) else _py(v) for k, v in a.items() if k != "meta"}
        meta = _unjson(a.get("meta"), {})
        if isinstance(meta, dict):
            out.update({k: v for k, v in meta.items() if k not in out})
        return out

    def episode(self, name: str | int) -> Episode:
        if isinstance(name, int):
            name = self.names[name]
        g = self._demo(name)
        n = int(g["actions"].shape[0])
        a_size = int(g["actions"].shape[1]) if g["actions"].ndim > 1 else 1
        actions = np.asarray(g["actions"][()], dtype=np.float32).reshape(n, a_size)

        def get(key, default):
            return np.asarray(g[key][()]) if key in g else default

        return Episode(
            name=name, obs={k: np.asarray(v[()], dtype=np.float32) for k, v in g["obs"].items()}, actions=actions,
            rewards=self.rewards(name),
            dones=get("dones", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            expert_actions=get("expert_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            policy_actions=get("policy_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            intervention=get("intervention", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            next_obs={k: np.asarray(v[()], dtype=np.float32) for k, v in g["next_obs"].items()} if "next_obs" in g else None,
            states=np.asarray(g["states"][()]) if "states" in g else None,
            attrs=self.episode_attrs(name))

    def _array(self, name: str, key: str) -> np.ndarray:
        """``key`` of demo `name` as (T, A) float32 (NaN when the demo lacks it, as `episode` reads it)."""
        g = self._demo(name)
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
            g = self._demo(n)
            attrs = self.episode_attrs(n)
            length = int(g["actions"].shape[0])
            labels = label_counts[n]
            interventions = int(np.asarray(g["intervention"][()]).sum()) if "intervention" in g else 0
            known = self.known(n)
            rows.append({"name": n, "length": length, "success": attrs.get("success"),
                         "success_source": attrs.get("success_source") if known["success"] else None,
                         "return": float(self.rewards(n).astype(np.float64).sum()) if known["rewards"] else None,
                         "known": known, "labels": labels, "interventions": interventions,
                         "source": attrs.get("source", self.meta.get("source")), "round": attrs.get("round")})
        lengths = [r["length"] for r in rows]
        succ = [bool(r["success"]) for r in rows if r["success"] is not None]
        sources: dict[str, int] = {}
        for r in rows:
            if r["success"] is not None:
                sources[r["success_source"] or "unrecorded"] = sources.get(r["success_source"] or "unrecorded", 0) + 1
        return {
            "path": str(self.path), "task": self.task, "robot": self.meta.get("robot"),
            "source": self.meta.get("source"), "episodes": len(rows), "steps": int(sum(lengths)),
            "total_attr": self.meta.get("total"), "mean_length": float(np.mean(lengths)) if lengths else 0.0,
            "min_length": min(lengths) if lengths else 0, "max_length": max(lengths) if lengths else 0,
            "success_rate": float(np.mean(succ)) if succ else None, "labels": sum(r["labels"] for r in rows),
            # episodes that know each field (the rest: NaN rewards / no success attribute / no next_obs)
            "known": {k: sum(r["known"][k] for r in rows) for k in ("rewards", "success", "next_obs")},
            "success_sources": sources,
            "label_source": source,
            "interventions": sum(r["interventions"] for r in rows),
            "episodes_with_interventions": sum(r["interventions"] > 0 for r in rows),
            "obs_groups": {k: int(v.shape[-1]) for k, v in self._demo(self.names[0])["obs"].items()} if rows else {},
            "action_size": int(self._demo(self.names[0])["actions"].shape[-1]) if rows else None,
            "skipped": dict(self.skipped), "rows": rows,
        }

    # ----- splits -----
    def filter_key(self, key: str) -> list[str] | None:
        if "mask" in self.file and key in self.file["mask"]:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in self.file["mask"][key][()]]
        return None

    def user_split(self) -> bool:
        """Whether ``mask/train`` + ``mask/valid`` are a user's filter keys (not the writer's default split)."""
        if "mask" not in self.file or not all(k in self.file["mask"] for k in ("train", "valid")):
            return False
        return not any(_AUTO_SPLIT_ATTR in self.file["mask"][k].attrs for k in ("train", "valid"))

    def split(self, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SPLIT_SEED
              ) -> tuple[list[str], list[str]]:
        """Train/validation demo names, *by episode* (no episode is in both).

        A user's robomimic filter keys ``mask/train`` + ``mask/valid`` win when present;
        otherwise (also over the default split the writer stores for robomimic, which is
        this with the default arguments) `train_valid_split` with `val_fraction`, `seed`.
        """
        if self.user_split():
            keep = set(self.names)
            train, valid = self.filter_key("train"), self.filter_key("valid")
            return [n for n in train if n in keep], [n for n in valid if n in keep]
        return train_valid_split(self.names, val_fraction, seed)

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
    """Refuse a dataset whose action size or observation group size differs from `env`'s (one
    line naming the sizes, the task the dataset was recorded for, and what to do)."""
    spec = env.spec
    recorded = meta.get("task")
    files = ", ".join(Path(f).name for f in meta.get("files") or []) or "the dataset"
    of = f"{files} (recorded for {recorded})" if recorded and recorded != spec.task else files
    hint = (f": pass --task {recorded}, or a dataset recorded for {spec.task}" if recorded and recorded != spec.task
            else "")
    a = meta.get("action_size")
    if a is not None and int(a) != int(spec.action_size):
        raise DatasetError(f"{of} has {a}-D actions, task {spec.task} takes {spec.action_size}-D actions{hint}")
    groups = meta.get("obs_groups") or {}
    if obs_group in groups and obs_group in spec.observation_sizes and \
            int(groups[obs_group]) != int(spec.observation_sizes[obs_group]):
        raise DatasetError(f"{of}: observation group {obs_group!r} has size {groups[obs_group]}, task {spec.task} "
                           f"has {spec.observation_sizes[obs_group]}{hint}")
    if meta.get("robot") and getattr(env, "robot", None) is not None and meta["robot"] != env.robot.name:
        raise DatasetError(f"dataset was recorded on robot {meta['robot']!r}, task {spec.task} uses {env.robot.name!r}")


def format_rate(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"
