"""The HDF5 dataset format: one layout for simulation rollouts and robot recordings.

The layout is robomimic's (``data/demo_N/...``: what robomimic's ``SequenceDataset`` and
``get_env_metadata_from_dataset`` read, with its default config), extended with what
DAgger and human interventions need::

    data                        attrs: total (steps in all demos), env_args (JSON, robomimic's
                                {"env_name": task, "type": 2 (robomimic's EnvType.GYM_TYPE),
                                "env_kwargs": overrides}), roboreal_env (JSON, roboreal's own:
                                {"task", "env_kwargs", "make"}), format, task, robot,
                                robot_spec_checksum, control_dt, action_size, obs_groups (JSON
                                {group: size}: the vector groups), image_shapes (JSON {camera:
                                [C, H, W]}: the image groups, absent without cameras), source
                                ("sim" | "robot"), bundle, expert, created, roboreal_version,
                                meta (JSON of anything else)
    data/demo_N                 attrs: num_samples (exact step count), success (bool; *absent*
                                when unknown), success_source ("env" | "operator" | ...; with
                                success), return (sum of rewards; absent when a reward is
                                unknown), next_obs_last ("observed" | "repeated"), meta (JSON:
                                seed, round, expert, policy, source, ... per-episode provenance)
        obs/<group>             (T, k) float32: observation groups *before* each action
                                (``policy``, ``observation``, ``achieved_goal``, ``desired_goal``,
                                ``critic``: what the env returned)
        obs/<camera>            (T, C, H, W) uint8: a camera's image before each action (C = 3 RGB,
                                4 RGB + depth), never converted to float; chunked one frame per
                                chunk and gzip-compressed (`IMAGE_COMPRESSION_LEVEL`), so a reader
                                decompresses only the frames it reads
        next_obs/<group>        (T, k) float32: the groups after each action. The last row is the
                                episode's true final observation when the writer had it
                                (``next_obs_last="observed"``: simulation, `BatchedRecorder`),
                                else a copy of the last ``obs`` row (``"repeated"``: a robot
                                session ends without an observation after its last step)
        next_obs/<camera>       (T, C, H, W) uint8, stored as obs/<camera> (a frame that is also an
                                obs frame is compressed once and written to both)
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

This module holds what the writer and the reader agree on: the names, the attributes'
encoding, the provenance (`dataset_meta`, env args) and the default train/validation split.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Iterable, Sequence

import numpy as np

FORMAT = "roboreal-dataset/2"  # /2: unknown rewards are NaN (/1 stored 0 for a robot's unknown rewards)
DEMO_NAME = re.compile(r"^demo_(\d+)$")

# gzip level of image frames, each compressed once by the writer (zlib) and stored as a raw chunk
# in obs and next_obs. On 64x64 frames that writes faster than lzf through h5py (which compresses
# obs and next_obs apiece; h5py's lzf cannot take precompressed chunks) and stores 15-30 % less;
# level 4 gains another 15 % on noise-free frames at about 0.8x the speed (figures: `DatasetWriter`).
IMAGE_COMPRESSION_LEVEL = 1
IMAGE_SHAPES_ATTR = "image_shapes"  # data.attrs: JSON {camera: [C, H, W]}


def is_image(array_or_shape: Any, per_step: bool = True) -> bool:
    """Whether an observation value is an image: (C, H, W) for one step (`per_step`), (T, C, H, W)
    for a stored group. Vector groups are (k,) per step and (T, k) stored."""
    shape = tuple(getattr(array_or_shape, "shape", array_or_shape))
    return len(shape) == (3 if per_step else 4)


def shape_text(shape: Sequence[int]) -> str:
    """An image shape as ``CxHxW`` (what errors and ``data info`` print)."""
    return "x".join(str(int(s)) for s in shape)

# robomimic's ``EnvType`` (robomimic/envs/env_base.py: ROBOSUITE_TYPE = 1, GYM_TYPE = 2,
# IG_MOMART_TYPE = 3). ``env_args["type"]`` must be one of them or robomimic's
# `get_env_class` raises; a roboreal task is closest to a Gym env (``env_name`` + kwargs).
ROBOMIMIC_GYM_TYPE = 2
ROBOMIMIC_ENV_TYPES = (1, 2, 3)

# The split the writer stores as ``mask/train`` + ``mask/valid`` (and `DatasetReader.split`'s default).
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
AUTO_SPLIT_ATTR = "roboreal_split"  # on mask/<key> datasets the writer made (not a user's filter key)


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or does not match what reads it (names the cause)."""


def demo_names(data: Iterable[str]) -> list[str]:
    """The ``demo_N`` names among `data`'s members, in order of N (other members left out)."""
    return sorted((n for n in data if DEMO_NAME.match(n)), key=lambda n: int(DEMO_NAME.match(n).group(1)))


# --------------------------------------------------------------------------------------
# Attribute encoding: dicts, lists and None are stored as JSON text
# --------------------------------------------------------------------------------------


def to_json(x: Any, *, sort_keys: bool = True, indent: int | None = None) -> str:
    """JSON text of `x`; numpy/torch values become lists, anything else unknown its ``str``."""
    return json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o), sort_keys=sort_keys,
                      indent=indent)


def from_json(x: Any, default: Any = None) -> Any:
    """`x` decoded from JSON text; text that is not JSON comes back as it is, None as `default`."""
    if x is None:
        return default
    if isinstance(x, bytes):
        x = x.decode()
    try:
        return json.loads(x)
    except (TypeError, ValueError):
        return x


def to_attr(v: Any):
    """`v` as an HDF5 attribute value (containers and None as JSON text)."""
    if isinstance(v, (dict, list, tuple)) or v is None:
        return to_json(v)
    return v


def from_attr(v: Any) -> Any:
    """An HDF5 attribute value as plain Python (JSON text decoded, numpy values as Python's)."""
    if isinstance(v, (str, bytes)):
        return from_json(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


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
        image_shapes = getattr(spec, "image_shapes", None) or {}
        if image_shapes:
            meta[IMAGE_SHAPES_ATTR] = {c: [int(x) for x in shape] for c, shape in image_shapes.items()}
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


def split_env_args(meta: dict) -> dict:
    """`meta` with ``env_args`` in robomimic's form, a non-robomimic one (format /1's ``type:
    "roboreal"``) moved into ``roboreal_env`` so no provenance is lost."""
    meta = dict(meta)
    env_args = from_json(meta.get("env_args"))
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
