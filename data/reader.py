"""`DatasetReader`: episodes, summaries and splits of an HDF5 dataset (layout: `roboreal.data.hdf5_format`).

Reads what `DatasetWriter` writes, a robomimic file, or an older roboreal one. A file that is
being recorded can be read: the writer holds no HDF5 file lock (see `roboreal.data.writer`),
and `DatasetReader` opens with SWMR *read* access (objects past the end of file its
superblock announced stay readable), looks each demo up once, leaves out demos linked after
it opened that it cannot read yet (past the ``total`` it read) and retries the open when it
lands on a half-written episode. A reader that stays open does not see later episodes: open
the file again.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from roboreal.data.hdf5_format import (AUTO_SPLIT_ATTR, DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, IMAGE_SHAPES_ATTR,
                                       DatasetError, demo_names, from_attr, from_json, is_image, train_valid_split)
from roboreal.data.labels import label_source, step_labels
from roboreal.data.journal import recover


@dataclass
class Episode:
    """One demo. ``obs``/``next_obs``: {group: (T, k) float32} for vector groups and {camera:
    (T, C, H, W) uint8} for image groups (`images` names them)."""

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

    @property
    def images(self) -> list[str]:
        """The image groups (cameras) among ``obs``."""
        return [g for g, v in self.obs.items() if is_image(v, per_step=False)]


class DatasetReader:
    """Read a dataset written by `DatasetWriter` (or a robomimic file, or an older roboreal one:
    no ``next_obs``, no ``mask``, ``env_args`` of type ``"roboreal"``).

    Demos that cannot be read (a file damaged outside the writer's protection) are
    skipped with a warning and listed in `skipped`, so one bad episode loses only itself.
    The file may be one a `DatasetWriter` is still recording: the reader sees the episodes
    finished when it opened (it opens without HDF5's file lock, and tries again a few times
    when the open, or a demo, fails, which happens when it lands on an episode's write);
    demos being linked as it opened are left out (see this module's docstring).
    """

    OPEN_ATTEMPTS = 8  # a writer appending back to back is mid-write a good share of the time

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file")
        recover(self.path)  # a writer killed mid-commit: back to its last commit (a live writer's file is left alone)
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
        self.meta = {k: from_attr(v) for k, v in self.data.attrs.items()}
        self.skipped: dict[str, str] = {}
        # each demo's group is looked up once, here: its object never changes after the writer linked
        # it, while ``data``'s own index does, as a writer appends (a later lookup by name could read
        # a half-updated index)
        self._groups: dict[str, h5py.Group] = {}
        self.names: list[str] = []
        total = self.meta.get("total")
        counted = 0  # steps of the readable demos so far, against ``total`` as read on opening
        for n in demo_names(self.data):
            problem = self._check(n)
            if problem and isinstance(total, int) and counted >= total:
                # past what ``total`` counted when this reader opened: an episode a writer is linking
                # now (its index read half-updated), not a damaged one: left out, as if opened earlier
                continue
            if problem:
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
        out = {k: from_attr(v) for k, v in a.items() if k != "meta"}
        meta = from_json(a.get("meta"), {})
        if isinstance(meta, dict):
            out.update({k: v for k, v in meta.items() if k not in out})
        return out

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """{camera: (C, H, W)} of the image groups: the first demo's, else the file's attribute."""
        if self.names:
            obs = self._demo(self.names[0])["obs"]
            return {k: tuple(int(x) for x in ds.shape[1:]) for k, ds in obs.items() if is_image(ds, per_step=False)}
        attr = self.meta.get(IMAGE_SHAPES_ATTR)
        return {c: tuple(int(x) for x in v) for c, v in attr.items()} if isinstance(attr, dict) else {}

    def episode(self, name: str | int, *, next_obs_images: bool = True) -> Episode:
        """Demo `name` (or its index) read whole. Image groups come back as stored (uint8);
        `next_obs_images=False` leaves them out of ``next_obs`` (half the decompression, for
        readers that use only ``obs``'s frames, like `load_transitions`)."""
        if isinstance(name, int):
            name = self.names[name]
        g = self._demo(name)
        n = int(g["actions"].shape[0])
        a_size = int(g["actions"].shape[1]) if g["actions"].ndim > 1 else 1
        actions = np.asarray(g["actions"][()], dtype=np.float32).reshape(n, a_size)

        def get(key, default):
            return np.asarray(g[key][()]) if key in g else default

        def group(sub: str, images: bool = True) -> dict[str, np.ndarray]:
            # frames stay uint8 (a float copy would be 4x the memory); vectors are float32
            return {k: np.asarray(ds[()], dtype=np.uint8) if is_image(ds, per_step=False)
                    else np.asarray(ds[()], dtype=np.float32)
                    for k, ds in g[sub].items() if images or not is_image(ds, per_step=False)}

        return Episode(
            name=name, obs=group("obs"), actions=actions,
            rewards=self.rewards(name),
            dones=get("dones", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            expert_actions=get("expert_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            policy_actions=get("policy_actions", np.full_like(actions, np.nan)).astype(np.float32).reshape(n, a_size),
            intervention=get("intervention", np.zeros(n, np.uint8)).astype(np.uint8).reshape(n),
            next_obs=group("next_obs", next_obs_images) if "next_obs" in g else None,
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
            "obs_groups": {k: int(v.shape[-1]) for k, v in self._demo(self.names[0])["obs"].items()
                           if not is_image(v, per_step=False)} if rows else {},
            "images": self._image_summary(),
            "action_size": int(self._demo(self.names[0])["actions"].shape[-1]) if rows else None,
            "skipped": dict(self.skipped), "rows": rows,
        }

    def _image_summary(self) -> dict[str, dict]:
        """{camera: {"shape": [C, H, W], "frames": obs frames in all demos, "compression": e.g. "gzip-1"}}."""
        out: dict[str, dict] = {}
        for n in self.names:
            for k, ds in self._demo(n)["obs"].items():
                if is_image(ds, per_step=False):
                    row = out.setdefault(k, {"shape": [int(x) for x in ds.shape[1:]], "frames": 0,
                                             "compression": f"{ds.compression}-{ds.compression_opts}"
                                             if ds.compression_opts is not None else str(ds.compression)})
                    row["frames"] += int(ds.shape[0])
        return out

    # ----- splits -----
    def filter_key(self, key: str) -> list[str] | None:
        if "mask" in self.file and key in self.file["mask"]:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in self.file["mask"][key][()]]
        return None

    def user_split(self) -> bool:
        """Whether ``mask/train`` + ``mask/valid`` are a user's filter keys (not the writer's default split)."""
        if "mask" not in self.file or not all(k in self.file["mask"] for k in ("train", "valid")):
            return False
        return not any(AUTO_SPLIT_ATTR in self.file["mask"][k].attrs for k in ("train", "valid"))

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


def format_rate(x: float | None) -> str:
    """A rate of a `DatasetReader.summary` (e.g. ``success_rate``) as a percentage, ``-`` when unknown."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"
