"""Into torch: the steps of dataset files as `TransitionSet`\\ s for imitation learning and offline RL.

`load_transitions` reads files (train/validation split by episode, labels by the file's
rule: `roboreal.data.labels`); `check_compatible` refuses a dataset an env cannot train on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from roboreal.data.hdf5_format import IMAGE_SHAPES_ATTR, DatasetError, from_json, is_image, shape_text
from roboreal.data.labels import label_source, no_labels_reason, step_labels
from roboreal.data.reader import DatasetReader, Episode


@dataclass
class TransitionSet:
    """All steps of some episodes, flattened, with what imitation learning needs.

    ``obs``: {group: (M, k) float32} and, for cameras, {camera: (M, C, H, W) uint8} (the frame
    before each step, as stored: a learner scales it); ``labels``: (M, A) expert labels (NaN where none);
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
            shapes = {tuple(int(x) for x in s.obs[g].shape[1:]) for s in sets}
            if len(shapes) > 1:
                if is_image(next(iter(shapes))):
                    raise DatasetError(f"camera {g!r} has frames of {' and '.join(sorted(map(shape_text, shapes)))} "
                                       f"(C x H x W) in different datasets")
                raise DatasetError(f"observation group {g!r} has sizes {sorted(s[0] for s in shapes)} in different "
                                   f"datasets")
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
    # frames stay uint8 (M, C, H, W); vector groups become float32
    return TransitionSet(
        obs={g: torch.as_tensor(np.concatenate(v)) if is_image(v[0], per_step=False) else t(v) for g, v in obs.items()},
        labels=t(lab).reshape(-1, a_size), labeled=t(labeled, torch.bool), episode=t(ep_id, torch.long),
        step=t(step, torch.long), episode_end=t(end, torch.long), actions=t(acts).reshape(-1, a_size),
        next_achieved=t(nach) if len(nach) == len(episodes) and nach else None,
        names=[f"{prefix}{ep.name}" for ep in episodes])


def _path_list(paths: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _no_labels_reason(path: str | Path, reader: DatasetReader, source: str) -> str:
    return no_labels_reason(path, source, len(reader.names), sum(reader.length(n) for n in reader.names))


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
    paths = _path_list(paths)
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
                meta[IMAGE_SHAPES_ATTR] = {c: list(v) for c, v in r.image_shapes.items()}  # what the demos hold
            source = r.label_source(labels)  # the whole file's rule, before any split or budget
            sources[str(p)] = source
            if max_episodes is not None:
                r.names = r.names[:max_episodes]
            tr, va = r.split(val_fraction, seed)
            prefix = f"{Path(p).name}:"
            # next_obs frames are not part of a TransitionSet: not decompressed
            tr_set = episodes_to_transitions([r.episode(n, next_obs_images=False) for n in tr], source,
                                             prefix=prefix) if tr else None
            va_set = episodes_to_transitions([r.episode(n, next_obs_images=False) for n in va], source,
                                             prefix=prefix) if va else None
            if sum(s.num_labels for s in (tr_set, va_set) if s is not None) == 0:
                unlabelled.append(_no_labels_reason(p, r, source))
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
    paths = _path_list(paths)
    counts: dict[str, int] = {}
    reasons = []
    for p in paths:
        with DatasetReader(p) as r:
            counts[str(p)] = sum(r.label_counts(labels).values())
            if counts[str(p)] == 0:
                reasons.append(_no_labels_reason(p, r, r.label_source(labels)))
    if not paths or len(reasons) == len(paths):
        raise DatasetError("nothing to train on: " + ("; ".join(reasons) or "no dataset files given"))
    return counts


def check_compatible(meta: dict, env, obs_group: str = "policy", image_inputs: Sequence[str] = ()) -> None:
    """Refuse a dataset whose action size, observation group size or camera shapes differ from
    `env`'s (one line naming the sizes, the task the dataset was recorded for, and what to do).

    Cameras: every camera the dataset holds (``meta["image_shapes"]``) that `env` renders too
    (``env.spec.image_shapes``) must have the env's (C, H, W); every camera in `image_inputs`
    (the ones a policy reads) must be in both."""
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
    recorded_images = from_json(meta.get(IMAGE_SHAPES_ATTR), {}) or {}
    env_images = getattr(spec, "image_shapes", None) or {}
    for camera, shape in env_images.items():
        if camera in recorded_images and tuple(int(x) for x in recorded_images[camera]) != tuple(shape):
            advice = hint or ": record it again at the task's resolution, or give the task's camera the dataset's"
            raise DatasetError(f"{of}: camera {camera!r} has {shape_text(recorded_images[camera])} frames, task "
                               f"{spec.task} renders {shape_text(shape)} (C x H x W){advice}")
    for camera in image_inputs:
        where = [w for w, shapes in (("the dataset", recorded_images), (f"task {spec.task}", env_images))
                 if camera not in shapes]
        if where:
            raise DatasetError(f"{of}: the policy reads camera {camera!r}, which {' and '.join(where)} "
                               f"{'lack' if len(where) > 1 else 'lacks'} (dataset cameras: "
                               f"{sorted(recorded_images) or 'none'}, task cameras: {sorted(env_images) or 'none'})")
    if meta.get("robot") and getattr(env, "robot", None) is not None and meta["robot"] != env.robot.name:
        raise DatasetError(f"dataset was recorded on robot {meta['robot']!r}, task {spec.task} uses {env.robot.name!r}")
