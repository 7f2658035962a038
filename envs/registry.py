"""Task registry and `make`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from roboreal.config import ConfigError, from_dict, load_yaml, to_dict
from roboreal.envs.core import BatchedEnv


@dataclass(frozen=True)
class TaskEntry:
    name: str
    env_class: Callable  # a MujocoTaskEnv subclass
    cfg_class: type
    defaults: dict  # overrides of the cfg class defaults that define this variant
    description: str = ""


_TASKS: dict[str, TaskEntry] = {}


def register(name: str, env_class: Callable, cfg_class: type, description: str = "", **defaults: Any) -> None:
    _TASKS[name] = TaskEntry(name, env_class, cfg_class, defaults, description)


def _ensure_registered() -> None:
    if not _TASKS:
        import roboreal.envs.tasks  # noqa: F401  (registers the built-in tasks)


def task_names() -> list[str]:
    _ensure_registered()
    return sorted(_TASKS)


def task_entry(name: str) -> TaskEntry:
    _ensure_registered()
    if name not in _TASKS:
        raise ConfigError("task", f"unknown task {name!r} (available: {', '.join(sorted(_TASKS))}, or gym:<EnvId>)")
    return _TASKS[name]


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into `base`, mapping by mapping. An empty mapping clears the field
    (``observation_noise={}``: no observation noise), it does not merge as "change nothing"."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and v and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def task_config(name: str, overrides: dict | None = None, config_file: str | Path | None = None):
    """The validated config of task `name`: class defaults < variant defaults < YAML file < overrides.

    Dotted keys (``"randomization.friction.range"``) and nested dicts both work; unknown
    keys are a `ConfigError` naming the field.
    """
    entry = task_entry(name)
    data = deep_merge(to_dict(entry.cfg_class()), entry.defaults)
    if config_file is not None:
        file_data = load_yaml(config_file) or {}
        if not isinstance(file_data, dict):
            raise ConfigError("", "expected a mapping of task config fields", source=str(config_file))
        data = deep_merge(data, _nest(file_data))
        from_dict(entry.cfg_class, data, source=str(config_file))  # errors name the file and field
    data = deep_merge(data, _nest(overrides or {}))
    return from_dict(entry.cfg_class, data)


def _nest(flat: dict) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (nested dicts pass through)."""
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        parts = str(key).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return nested


def make(task: str, num_envs: int = 1, device: str = "cpu", backend: str = "mujoco", seed: int = 0,
         config_file: str | Path | None = None, **overrides: Any) -> BatchedEnv:
    """Create a batched env.

    `task` is a registered roboreal task (see `roboreal tasks`) or ``gym:<EnvId>`` for any
    Gymnasium env wrapped into the batched contract. `backend` is ``"mujoco"`` (the C
    engine, CPU threads) or ``"warp"`` (MuJoCo Warp on a CUDA `device`, or the Warp CPU
    device; needs the ``gpu`` extra); backend options live in the task config's ``warp``
    section (``warp={"nconmax": 64}``). Keyword overrides set config fields
    of the task, e.g. ``make("go1-walk", num_envs=1024, episode_length_s=10,
    randomization={"friction": {"range": [0.4, 1.2]}})``.
    """
    from roboreal.envs.sim.backend import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown backend {backend!r} (available: {', '.join(map(repr, BACKENDS))})")
    if task.startswith("gym:"):
        if backend != "mujoco":
            raise ConfigError("backend", f"{task} is a Gymnasium env; only roboreal tasks run on backend {backend!r}")
        from roboreal.envs.gym_adapters import GymnasiumBatchedEnv

        return GymnasiumBatchedEnv(task[4:], num_envs=num_envs, device=device, seed=seed, **overrides)
    entry = task_entry(task)
    cfg = task_config(task, overrides, config_file)
    # backend="warp": MuJoCo Warp on `device` ("cuda", "cuda:1", or the slow Warp "cpu" device).
    env = entry.env_class(cfg, num_envs=num_envs, device=device, seed=seed, backend=backend)
    env.task_name = task
    env.spec.task = task
    return env


def cfg_fields(cfg_class: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg_class)]
