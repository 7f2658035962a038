"""Task registry and `make`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from roboreal.config import ConfigError, deep_merge, from_dict, load_yaml, to_dict
from roboreal.envs.core import BatchedEnv


@dataclass(frozen=True)
class TaskEntry:
    name: str
    env_class: Callable  # a MujocoTaskEnv subclass
    cfg_class: type
    defaults: dict  # overrides of the cfg class defaults that define this variant
    description: str = ""
    # Training presets (agents/configs/<algo>.yaml `tasks:`) are looked up by task name, then
    # by family: a task registered outside roboreal with family="go1-walk" trains with go1-walk's.
    family: str = ""


_TASKS: dict[str, TaskEntry] = {}
_LOADED = False
TASK_MODULES_ENV = "ROBOREAL_TASK_MODULES"  # comma-separated modules that register tasks when imported
ENTRY_POINT_GROUP = "roboreal.tasks"  # a pip package's tasks: a module (imported) or a function (called)


def register(name: str, env_class: Callable, cfg_class: type, description: str = "", family: str = "",
             **defaults: Any) -> None:
    """Register task `name` (`defaults` override the config class's defaults). Registering
    works before or after the built-in tasks are loaded; a name may be registered once."""
    if name in _TASKS and _TASKS[name].env_class is not env_class:
        raise ConfigError("task", f"task {name!r} is already registered (by {_TASKS[name].env_class.__module__})")
    _TASKS[name] = TaskEntry(name, env_class, cfg_class, defaults, description, family or name)


def _ensure_registered() -> None:
    """Built-in tasks, then the modules in $ROBOREAL_TASK_MODULES, then the entry points of
    group ``roboreal.tasks`` (each failure is an error naming the module)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib
    import os
    from importlib.metadata import entry_points

    import roboreal.envs.tasks  # noqa: F401  (registers the built-in tasks)

    for module in filter(None, (m.strip() for m in os.environ.get(TASK_MODULES_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            raise ConfigError("task", f"${TASK_MODULES_ENV}: importing {module!r} failed: {type(e).__name__}: {e}") from e
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
            if callable(target):
                target()
        except Exception as e:  # noqa: BLE001
            raise ConfigError("task", f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP} failed: "
                              f"{type(e).__name__}: {e}") from e


def task_names() -> list[str]:
    _ensure_registered()
    return sorted(_TASKS)


def task_entry(name: str) -> TaskEntry:
    _ensure_registered()
    if name not in _TASKS:
        raise ConfigError("task", f"unknown task {name!r} (available: {', '.join(sorted(_TASKS))}, or gym:<EnvId>; "
                          f"tasks of other packages register through ${TASK_MODULES_ENV} or the "
                          f"{ENTRY_POINT_GROUP!r} entry points)")
    return _TASKS[name]


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


def recorded_env_kwargs(meta: dict, task: str) -> dict:
    """The env settings a dataset was recorded with (``meta["env_kwargs"]``), for training on
    `task`. A dataset recorded for another task keeps only the fields `task`'s config has (e.g.
    ``robot``): the rest belong to the other task, and a mismatch is then reported as one by
    `check_compatible` instead of as an unknown field of `task`'s config."""
    kwargs = dict(meta.get("env_kwargs") or {})
    recorded = meta.get("task")
    if not kwargs or not recorded or recorded == task or task.startswith("gym:"):
        return kwargs
    fields = {f.name for f in dataclasses.fields(task_entry(task).cfg_class)}
    return {k: v for k, v in kwargs.items() if str(k).split(".")[0] in fields}


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

