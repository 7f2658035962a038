"""A training run's configuration: `TrainConfig` (task, algorithm, seed, envs, device, budget,
hyper-parameters) with its `RunnerConfig` (checkpoints, evaluation, logging), resolved from
the presets and the command line, and read back from a run directory.

Presets: ``agents/configs/<algo>.yaml`` has ``defaults`` and per-task sections
(``tasks.<task>``); both hold `TrainConfig` fields (``num_envs``, ``total_steps``,
``algorithm: {...}``, ``runner: {...}``, ``env: {...}``). Command-line overrides
``key=value`` go to the algorithm config, ``env.<field>=`` to the task config and
``runner.<field>=`` to `RunnerConfig`; ``seed``, ``num_envs``, ``total_steps`` and
``device`` set the run itself. Every key is validated; a misspelled one is a
`ConfigError` naming it. Precedence: dataclass defaults < ``defaults`` < ``tasks.<task>``
< explicit arguments < overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from roboreal.agents.registry import algorithm_classes, algorithm_names
from roboreal.config import (ConfigError, apply_overrides, atomic_write, deep_merge, from_dict, load_yaml, parse_override,
                             to_dict)

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class RunnerConfig:
    save_interval: int = 20  # iterations between checkpoints (last.pt and a periodic iter_XXXXXX.pt)
    keep_periodic: bool = True  # keep the periodic snapshots
    stats_window: int = 100  # training episodes in the running mean return / success rate (logged as train/*)
    best_metric: Literal["auto", "return", "success"] = "auto"  # auto: success on goal tasks, else return
    # Deterministic evaluation on separate envs chooses best.pt (see roboreal.agents.runner).
    # 0: no evaluation; best.pt then follows the running mean of training episodes.
    eval_interval: int = 10  # iterations between evaluations (plus one when training ends)
    eval_episodes: int = 10  # deterministic episodes per evaluation (one eval env each)
    num_threads: int = 0  # torch.set_num_threads (0: leave torch's default)
    max_time_s: float = 0.0  # wall-clock training budget; the run ends normally once spent (0: no limit)

    def __post_init__(self) -> None:
        if self.save_interval < 1:
            raise ConfigError("save_interval", f"must be >= 1, got {self.save_interval}")
        if self.max_time_s < 0:
            raise ConfigError("max_time_s", f"must be >= 0, got {self.max_time_s}")
        if self.stats_window < 1:
            raise ConfigError("stats_window", f"must be >= 1, got {self.stats_window}")
        if self.eval_interval < 0:
            raise ConfigError("eval_interval", f"must be >= 0 (0: no evaluation), got {self.eval_interval}")
        if self.eval_episodes < 1:
            raise ConfigError("eval_episodes", f"must be >= 1, got {self.eval_episodes}")


@dataclass
class TrainConfig:
    task: str
    algo: str
    seed: int = 0
    num_envs: int = 64
    device: str = "cpu"
    backend: str = "mujoco"  # simulation backend: "mujoco" (C engine, CPU) or "warp" (MuJoCo Warp, GPU)
    total_steps: int = 1_000_000
    env: dict[str, Any] = field(default_factory=dict)  # task config overrides (validated by the task)
    algorithm: dict[str, Any] = field(default_factory=dict)  # validated against the algorithm's config class
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        if self.algo not in algorithm_names():
            raise ConfigError("algo", f"unknown algorithm {self.algo!r} (available: {', '.join(algorithm_names())})")
        if self.num_envs < 1:
            raise ConfigError("num_envs", f"must be >= 1, got {self.num_envs}")
        from roboreal.envs.sim.backend import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r} (available: {', '.join(BACKENDS)})")

    def algorithm_config(self) -> Any:
        """The validated hyper-parameters: an instance of the algorithm's config dataclass."""
        _, cfg_cls = algorithm_classes(self.algo)
        try:
            return from_dict(cfg_cls, self.algorithm)
        except ConfigError as e:
            raise ConfigError(f"algorithm.{e.field}" if e.field else "algorithm",
                              str(e).split(": ", 1)[-1]) from None


_RUN_KEYS = {"seed", "num_envs", "device", "backend", "total_steps"}


def preset_section(task: str, algo: str, robot: str | None = None,
                   sections: dict | None = None) -> tuple[str | None, str | None]:
    """Which ``tasks.<name>`` section of ``agents/configs/<algo>.yaml`` trains `task` on
    `robot` (None: the task's own robot): the task's own, else its family's (the task it
    was registered like), else none (the generic ``defaults``). Returns (section, a note for
    the user when the choice is not exact: a fallback, or settings tuned on another robot).
    `sections`: the file's ``tasks:`` mapping when the caller has read it already."""
    if sections is None:
        path = CONFIG_DIR / f"{algo}.yaml"
        sections = ((load_yaml(path) or {}).get("tasks") or {}) if path.exists() else {}
    if task.startswith("gym:"):
        return (task, None) if task in sections else (None, f"no tuned {algo} settings for {task}: using the "
                                                            f"generic defaults")
    from roboreal.envs.registry import task_config, task_entry

    family = task_entry(task).family
    robot = robot or task_config(task).robot
    if task in sections:
        section, note = task, None
    elif family in sections:
        section, note = family, f"no {algo} settings for {task}: using those of its family {family}"
    else:
        return None, f"no tuned {algo} settings for {task} (or its family {family}): using the generic defaults"
    try:
        tuned_on = task_config(section).robot
    except ConfigError:  # a family name that is no registered task
        tuned_on = robot
    if tuned_on != robot:
        note = f"{note}, " if note else f"{algo} settings for {section} are "
        note += f"tuned for robot {tuned_on}, not {robot}"
    return section, note


def default_config_data(task: str, algo: str) -> dict:
    """``defaults`` merged with the task's section of ``agents/configs/<algo>.yaml``
    (`preset_section`: the task's own, else its family's)."""
    path = CONFIG_DIR / f"{algo}.yaml"
    data = load_yaml(path) if path.exists() else {}
    data = data or {}
    unknown = [k for k in data if k not in ("defaults", "tasks")]
    if unknown:
        raise ConfigError(unknown[0], "unknown section (known: defaults, tasks)", source=str(path))
    sections = data.get("tasks") or {}
    section, _ = preset_section(task, algo, sections=sections)
    return deep_merge(data.get("defaults") or {}, sections.get(section) if section else None)


def resolve_config(task: str, algo: str, overrides: list[str] | dict | None = None, *, seed: int | None = None,
                   num_envs: int | None = None, device: str | None = None, total_steps: int | None = None,
                   validate_env: bool = True) -> TrainConfig:
    """Defaults < YAML (defaults, then the task's section) < explicit arguments < ``key=value`` overrides."""
    _, cfg_cls = algorithm_classes(algo)
    data = default_config_data(task, algo)
    data["task"], data["algo"] = task, algo
    for key, value in (("seed", seed), ("num_envs", num_envs), ("device", device), ("total_steps", total_steps)):
        if value is not None:
            data[key] = value
    algorithm = to_dict(from_dict(cfg_cls, data.get("algorithm") or {}, source=f"{algo}.yaml algorithm"))
    env_over = dict(data.get("env") or {})
    runner = data.get("runner") or {}
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in (overrides or [])]
    algo_items = []
    for key, value in items:
        if key.startswith("env."):
            env_over[key[4:]] = value
        elif key.startswith("runner."):
            try:
                runner = to_dict(apply_overrides(RunnerConfig, runner, {key[7:]: value}))
            except ConfigError as e:
                raise ConfigError(f"runner.{e.field}", str(e).split(": ", 1)[-1]) from None
        elif key in _RUN_KEYS:
            data[key] = value
        else:
            algo_items.append((key, value))
    if algo_items:
        algorithm = to_dict(apply_overrides(cfg_cls, algorithm, dict(algo_items)))
    data["algorithm"] = algorithm
    data["env"] = env_over
    data["runner"] = runner
    if "robot" in env_over and not task.startswith("gym:"):
        # written down so the run finds its robot again from any folder (a path -> absolute)
        from roboreal.robots.spec import load_robot, robot_reference

        try:
            env_over["robot"] = robot_reference(load_robot(str(env_over["robot"])))
        except ConfigError as e:
            raise ConfigError("env.robot", str(e).split("robot: ", 1)[-1], e.source) from None
    cfg = from_dict(TrainConfig, data)
    if validate_env and not task.startswith("gym:"):
        from roboreal.envs.registry import task_config

        try:
            task_config(task, env_over)
        except ConfigError as e:
            raise ConfigError(f"env.{e.field}" if e.field and e.field != "task" else e.field,
                              str(e).split(": ", 1)[-1]) from None
    return cfg


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run directory was trained with (its ``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError("run_dir", f"{run_dir} has no config.yaml (not a roboreal run directory)")
    return from_dict(TrainConfig, load_yaml(path), source=str(path))


def write_run_config(run_dir: str | Path, config: dict) -> None:
    """Write a run's ``config.yaml`` atomically (temporary file, then rename): under torchrun the
    other ranks read it while rank 0 rewrites it on resume, and must never see it half-written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(config, sort_keys=False)))
