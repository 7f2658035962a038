"""The training runner: configs, the iteration loop, logging, checkpoints and exact resume.

A run directory holds::

    config.yaml            resolved config (task, algo, seed, env overrides, hyper-parameters, runner)
    checkpoints/last.pt    everything needed to resume (replay buffer included)
    checkpoints/best.pt    the best *evaluated* policy so far (see "Evaluation and best.pt")
    checkpoints/iter_XXXXXX.pt   periodic snapshots (no replay buffer)
    tb/                    TensorBoard logs
    progress.csv           one row per iteration (``eval/*`` columns filled on evaluation iterations)
    metrics.json           summary (final training figures, best and final evaluation, steps, wall time, steps/s)
    learning_curve.png     return (and success rate) against env steps, evaluations as markers

Evaluation and best.pt (the Stable-Baselines3 ``EvalCallback`` / RL Zoo convention): every
``runner.eval_interval`` iterations, and once when training ends, the main rank runs
``runner.eval_episodes`` deterministic episodes of the current policy (`policy.build_policy`
of ``policy_state()``, i.e. exactly what a checkpoint holds) on separate eval envs: the
same task and env overrides, one env per episode, seed ``seed + EVAL_SEED_OFFSET``
(10_000; training envs use ``seed + 1000 * rank``). The eval envs are built once, lazily,
and every evaluation starts them from their state at construction, so each evaluation
plays the same episodes and its figure equals a fresh `policy.evaluate` of that policy on
``make(task, num_envs=eval_episodes, seed=seed + 10_000)``. Evaluation leaves the training
RNG streams alone (a resumed run stays bit-identical). Logged as ``eval/return``,
``eval/return_std``, ``eval/length`` and ``eval/success_rate`` (goal tasks) to TensorBoard
and progress.csv. ``best.pt`` is the best evaluated policy: by success rate with the mean
return breaking ties on goal tasks, else by mean return (``runner.best_metric``); a
strictly better evaluation replaces it. Its ``meta["eval"]`` holds the figures and the
step they come from (as does any checkpoint written at an evaluation iteration, e.g. the
final ``last.pt``). The best evaluation is part of the resume state, and a resumed run also
reads ``best.pt``'s figures, so it never replaces a better best.pt. Under torchrun only
rank 0 evaluates; the other ranks carry on to the next collective.
``runner.eval_interval=0`` turns evaluation off: best.pt is then the policy with the best
running mean of the last ``stats_window`` *training* episodes (success rate on goal tasks),
a cheap but biased selector (stochastic actions, and a mean over policies that kept changing).

Checkpoints are written at iteration boundaries with `torch.save` of tensors and plain
containers only (they load with ``torch.load(weights_only=True)``), atomically
(write + rename). ``last.pt`` holds the algorithm state (networks, optimizers,
normalizers, replay buffer, current observation, counters), every RNG (torch, CUDA,
numpy, python ``random``), the env state (its generator, the randomizer's rng and
sampled values, the simulation state of every world and every task buffer; see
`roboreal.agents.env_state`) and the runner's statistics. Resuming rebuilds the env,
restores all of it and continues: on the same device and thread settings the run ends
with exactly the parameters of an uninterrupted run (tested). A run killed mid-way
repeats the iterations after its last checkpoint.

Configs: ``agents/configs/<algo>.yaml`` has ``defaults`` and per-task sections
(``tasks.<task>``); both hold `TrainConfig` fields (``num_envs``, ``total_steps``,
``algorithm: {...}``, ``runner: {...}``, ``env: {...}``). Command-line overrides
``key=value`` go to the algorithm config, ``env.<field>=`` to the task config and
``runner.<field>=`` to `RunnerConfig`; ``seed``, ``num_envs``, ``total_steps`` and
``device`` set the run itself. Every key is validated; a misspelled one is a
`ConfigError` naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from roboreal.agents.base import Algorithm, DistContext
from roboreal.agents.env_state import env_state_dict, load_env_state
from roboreal.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_override, to_dict

CONFIG_DIR = Path(__file__).parent / "configs"
CHECKPOINT_FORMAT = "roboreal-checkpoint/1"
EVAL_SEED_OFFSET = 10_000  # eval envs are seeded seed + EVAL_SEED_OFFSET (training envs: seed + 1000 * rank)


def algorithm_classes(algo: str) -> tuple[type[Algorithm], type]:
    """(algorithm class, its config dataclass) for ``ppo`` | ``sac`` | ``crossq`` | ``dqn``."""
    if algo == "ppo":
        from roboreal.agents.ppo import PPO, PPOConfig

        return PPO, PPOConfig
    if algo == "sac":
        from roboreal.agents.sac import SAC, SACConfig

        return SAC, SACConfig
    if algo == "crossq":
        from roboreal.agents.crossq import CrossQ, CrossQConfig

        return CrossQ, CrossQConfig
    if algo == "dqn":
        from roboreal.agents.dqn import DQN, DQNConfig

        return DQN, DQNConfig
    raise ConfigError("algo", f"unknown algorithm {algo!r} (available: ppo, sac, crossq, dqn)")


ALGORITHMS = ("ppo", "sac", "crossq", "dqn")


@dataclass
class RunnerConfig:
    save_interval: int = 20  # iterations between checkpoints (last.pt and a periodic iter_XXXXXX.pt)
    keep_periodic: bool = True  # keep the periodic snapshots
    stats_window: int = 100  # training episodes in the running mean return / success rate (logged as train/*)
    best_metric: Literal["auto", "return", "success"] = "auto"  # auto: success on goal tasks, else return
    # Deterministic evaluation on separate envs chooses best.pt (see the module docstring).
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
        if self.algo not in ALGORITHMS:
            raise ConfigError("algo", f"unknown algorithm {self.algo!r} (available: {', '.join(ALGORITHMS)})")
        if self.num_envs < 1:
            raise ConfigError("num_envs", f"must be >= 1, got {self.num_envs}")
        from roboreal.envs.sim.backend import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"unknown backend {self.backend!r} (available: {', '.join(BACKENDS)})")

    def algorithm_config(self):
        _, cfg_cls = algorithm_classes(self.algo)
        try:
            return from_dict(cfg_cls, self.algorithm)
        except ConfigError as e:
            raise ConfigError(f"algorithm.{e.field}" if e.field else "algorithm",
                              str(e).split(": ", 1)[-1]) from None


_RUN_KEYS = {"seed", "num_envs", "device", "backend", "total_steps"}


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in (override or {}).items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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
    merged = _deep_merge(data.get("defaults") or {}, sections.get(section) or {} if section else {})
    return merged


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def _parse(text: str) -> tuple[str, Any]:
    """`parse_override`, plus exponent numbers YAML 1.1 reads as strings (``learning_rate=1e-3``)."""
    key, value = parse_override(text)
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    return key, value


def resolve_config(task: str, algo: str, overrides: list[str] | dict | None = None, *, seed: int | None = None,
                   num_envs: int | None = None, device: str | None = None, total_steps: int | None = None,
                   validate_env: bool = True) -> TrainConfig:
    """Defaults < YAML (defaults, then the task's section) < explicit arguments < ``key=value`` overrides."""
    algo_cls, cfg_cls = algorithm_classes(algo)
    data = default_config_data(task, algo)
    data["task"], data["algo"] = task, algo
    for key, value in (("seed", seed), ("num_envs", num_envs), ("device", device), ("total_steps", total_steps)):
        if value is not None:
            data[key] = value
    algorithm = to_dict(from_dict(cfg_cls, data.get("algorithm") or {}, source=f"{algo}.yaml algorithm"))
    env_over = dict(data.get("env") or {})
    runner = data.get("runner") or {}
    items = overrides.items() if isinstance(overrides, dict) else [_parse(o) for o in (overrides or [])]
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
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError("run_dir", f"{run_dir} has no config.yaml (not a roboreal run directory)")
    return from_dict(TrainConfig, load_yaml(path), source=str(path))


# ----------------------------------------------------------------------------------------------
# RNG and checkpoint helpers

def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with the safe unpickler (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


# ----------------------------------------------------------------------------------------------
# The runner

@dataclass
class RunState:
    iteration: int = 0
    global_step: int = 0
    best: float = -math.inf  # best running mean of training episodes (best.pt's rule without evaluation)
    elapsed: float = 0.0  # training wall time, evaluations included
    history: list = field(default_factory=list)
    best_eval: dict = field(default_factory=dict)  # figures of the best evaluation ({} before the first)
    last_eval: dict = field(default_factory=dict)  # figures of the latest evaluation
    eval_time: float = 0.0  # seconds spent evaluating (part of elapsed)


class Runner:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, dist: DistContext | None = None,
                 progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.dist = dist or DistContext()
        self.show_progress = progress and self.dist.is_main
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.algo_cfg = cfg.algorithm_config()
        if cfg.runner.num_threads > 0:
            torch.set_num_threads(cfg.runner.num_threads)
        seed_everything(cfg.seed + 1000 * self.dist.rank)

        from roboreal.envs import make

        self.env = make(cfg.task, num_envs=cfg.num_envs, device=cfg.device, backend=cfg.backend,
                        seed=cfg.seed + 1000 * self.dist.rank, **cfg.env)
        algo_cls, _ = algorithm_classes(cfg.algo)
        self.algo: Algorithm = algo_cls(self.env, self.algo_cfg, cfg.device, cfg.total_steps, self.dist)
        self.state = RunState()
        window = cfg.runner.stats_window
        self.win_return: deque = deque(maxlen=window)
        self.win_length: deque = deque(maxlen=window)
        self.win_success: deque = deque(maxlen=window)
        self.goal = bool(self.env.spec.goal_conditioned)
        metric = cfg.runner.best_metric
        self.best_metric = ("success" if self.goal else "return") if metric == "auto" else metric
        self.resumed_exact = True
        self.eval_enabled = cfg.runner.eval_interval > 0
        self.eval_seed = cfg.seed + EVAL_SEED_OFFSET
        self._eval_env = None  # built on the first evaluation (main rank only)
        self._eval_env_state = None  # its state at construction, restored before every evaluation

    # ----- checkpoints -----
    def _meta(self) -> dict:
        return {"task": self.cfg.task, "algo": self.cfg.algo, "env": to_dict(self.cfg.env), "seed": self.cfg.seed,
                "num_envs": self.cfg.num_envs, "control_dt": float(self.env.spec.control_dt),
                "global_step": self.state.global_step, "iteration": self.state.iteration,
                "world_size": self.dist.world_size, "rank": self.dist.rank,
                # this policy's evaluated figures, when it was evaluated at this iteration
                **({"eval": dict(self.state.last_eval)}
                   if self.state.last_eval.get("iteration") == self.state.iteration else {})}

    def checkpoint(self, full: bool) -> dict:
        ckpt = {"format": CHECKPOINT_FORMAT, "meta": self._meta(), "config": to_dict(self.cfg),
                "policy": self.algo.policy_state(), "algorithm": self.algo.state_dict(include_replay=full)}
        if full:
            ckpt["runner"] = {**dataclasses.asdict(self.state),
                              "win_return": list(self.win_return), "win_length": list(self.win_length),
                              "win_success": list(self.win_success)}
            ckpt["rng"] = rng_state()
            ckpt["env"] = env_state_dict(self.env)
        return ckpt

    def save(self, periodic: bool) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not self.dist.is_main:
            # Every rank keeps its own envs, observation and RNG streams for an exact resume.
            atomic_save(self.checkpoint(full=True), self.ckpt_dir / f"last.rank{self.dist.rank}.pt")
            return
        atomic_save(self.checkpoint(full=True), self.ckpt_dir / "last.pt")
        if periodic and self.cfg.runner.keep_periodic:
            atomic_save(self.checkpoint(full=False), self.ckpt_dir / f"iter_{self.state.iteration:06d}.pt")
        self.write_logs()

    def restore(self) -> None:
        name = "last.pt" if self.dist.is_main else f"last.rank{self.dist.rank}.pt"
        path = self.ckpt_dir / name
        if not path.is_file():
            raise ConfigError("resume", f"{path} not found: nothing to resume")
        ckpt = load_checkpoint(path, map_location=self.cfg.device)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError("resume", f"{path}: unknown checkpoint format {ckpt.get('format')!r}")
        self.algo.load_state_dict(ckpt["algorithm"])
        r = ckpt["runner"]
        self.state = RunState(iteration=int(r["iteration"]), global_step=int(r["global_step"]), best=float(r["best"]),
                              elapsed=float(r["elapsed"]), history=list(r["history"]),
                              best_eval=dict(r.get("best_eval") or {}), last_eval=dict(r.get("last_eval") or {}),
                              eval_time=float(r.get("eval_time", 0.0)))
        if self.dist.is_main and self.eval_enabled:
            self._adopt_saved_best()
        self.win_return.extend(r["win_return"])
        self.win_length.extend(r["win_length"])
        self.win_success.extend(r["win_success"])
        set_rng_state(ckpt["rng"])
        if self.dist.enabled:  # every rank must resume from the same iteration
            it = torch.tensor([self.state.iteration, -self.state.iteration], dtype=torch.float64)
            import torch.distributed as tdist

            tdist.all_reduce(it, op=tdist.ReduceOp.MAX)
            if int(it[0]) != -int(it[1]):
                raise ConfigError("resume", f"the ranks' checkpoints are from different iterations "
                                            f"({-int(it[1])}..{int(it[0])}); cannot resume exactly")
        if ckpt.get("env") is not None:
            load_env_state(self.env, ckpt["env"])
        else:
            self.resumed_exact = False
            obs, _ = self.env.reset(seed=self.cfg.seed + 7919 * (self.state.iteration + 1) + 1000 * self.dist.rank)
            self.algo.obs = {k: v.to(self.algo.device) for k, v in obs.items()}
            print(f"roboreal train: {self.cfg.task} cannot save its state; its envs were re-seeded on resume, "
                  "so this run will differ from an uninterrupted one")

    # ----- statistics and logs -----
    def _window_stats(self) -> dict[str, float]:
        out = {}
        if self.win_return:
            out["train/return"] = float(np.mean(self.win_return))
            out["train/episode_length"] = float(np.mean(self.win_length))
        if self.win_success:
            out["train/success_rate"] = float(np.mean(self.win_success))
        return out

    def write_logs(self) -> None:
        rows = self.state.history
        if rows:
            keys: list[str] = []
            for row in rows:
                keys += [k for k in row if k not in keys]
            with open(self.run_dir / "progress.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(rows)
        stats = self._window_stats()
        summary = {
            "task": self.cfg.task, "algo": self.cfg.algo, "seed": self.cfg.seed, "num_envs": self.cfg.num_envs,
            "world_size": self.dist.world_size, "iterations": self.state.iteration,
            "global_step": self.state.global_step, "wall_time_s": round(self.state.elapsed, 2),
            "steps_per_s": round(self.state.global_step / max(self.state.elapsed, 1e-9), 1),
            "final_return": stats.get("train/return"), "final_success_rate": stats.get("train/success_rate"),
        }
        if self.eval_enabled:
            best = self.state.best_eval
            summary.update({
                "best_by": "eval", f"best_{self.best_metric}": self._primary(best) if best else None,
                "best_step": best.get("step"), "best_eval": best or None, "final_eval": self.state.last_eval or None,
                "eval_interval": self.cfg.runner.eval_interval, "eval_episodes": self.cfg.runner.eval_episodes,
                "eval_seed": self.eval_seed, "eval_time_s": round(self.state.eval_time, 2)})
        else:
            summary.update({"best_by": f"train/{self.best_metric} (running mean of {self.cfg.runner.stats_window} "
                                       "training episodes)",
                            f"best_{self.best_metric}": None if self.state.best == -math.inf else self.state.best})
        with open(self.run_dir / "metrics.json", "w") as f:
            json.dump(summary, f, indent=2)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.state.history if "train/return" in r]
        has_success = any("train/success_rate" in r for r in rows)
        fig, axes = plt.subplots(1, 2 if has_success else 1, figsize=(10 if has_success else 6, 4), squeeze=False)
        ax = axes[0][0]
        ax.plot([r["step"] for r in rows], [r["train/return"] for r in rows], label="training episodes")
        evals = [r for r in self.state.history if "eval/return" in r]
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval/return"] for r in evals], "o-", ms=3, color="tab:orange",
                    label=f"deterministic evaluation ({self.cfg.runner.eval_episodes} episodes)")
            ax.legend(fontsize=8)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"mean return (last {self.cfg.runner.stats_window} episodes)")
        ax.set_title(f"{self.cfg.task} / {self.cfg.algo}")
        ax.grid(alpha=0.3)
        if has_success:
            srows = [r for r in rows if "train/success_rate" in r]
            ax = axes[0][1]
            ax.plot([r["step"] for r in srows], [r["train/success_rate"] for r in srows], color="tab:green")
            erows = [r for r in evals if "eval/success_rate" in r]
            if erows:
                ax.plot([r["step"] for r in erows], [r["eval/success_rate"] for r in erows], "o-", ms=3,
                        color="tab:orange")
            ax.set_xlabel("env steps")
            ax.set_ylabel("success rate")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.run_dir / "learning_curve.png", dpi=100)
        plt.close(fig)

    # ----- the loop -----
    def run(self, resume: bool = False, stop_after_iterations: int | None = None) -> dict:
        """Train to ``total_steps``. ``stop_after_iterations`` stops early *without* the final
        checkpoint (tests use it to simulate a run killed after that iteration)."""
        cfg = self.cfg
        main = self.dist.is_main
        if resume:
            self.restore()
        elif main:
            if (self.ckpt_dir / "last.pt").exists():
                raise ConfigError("run_dir", f"{self.run_dir} already holds a run; use --resume {self.run_dir} "
                                             "or another --run-dir")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "config.yaml", "w") as f:
                yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state.global_step if resume else None)
        progress = self._progress()
        interrupted = False
        try:
            task_id = progress.add_task("train", total=cfg.total_steps, completed=self.state.global_step,
                                        ret="-", succ="-", sps="-") if progress else None
            if progress:
                progress.start()
            start_iteration = self.state.iteration
            while self.state.global_step < cfg.total_steps:
                t0 = time.perf_counter()
                step0 = self.state.global_step
                metrics = self.algo.iteration()
                episodes = self.algo.pop_episodes()
                self.state.iteration += 1
                self.state.global_step = self.algo.global_step * self.dist.world_size
                dt = time.perf_counter() - t0
                self.state.elapsed += dt
                self._record_episodes(episodes)
                stats = self._window_stats()
                sps = (self.state.global_step - step0) / max(dt, 1e-9)
                row = {"iteration": self.state.iteration, "step": self.state.global_step,
                       "time_s": round(self.state.elapsed, 3), "perf/sps": round(sps, 1), **stats, **metrics}
                for name, values in (episodes.get("reward_terms") or {}).items():
                    row[f"reward_terms/{name}"] = float(values.mean())
                # The last iteration (every rank agrees: same steps, budget all-reduced) ends with an evaluation.
                final = self.state.global_step >= cfg.total_steps or (cfg.runner.max_time_s > 0
                                                                      and self._time_budget_spent())
                if main and self.eval_enabled and (self.state.iteration % cfg.runner.eval_interval == 0 or final):
                    row.update(self._evaluate_and_select())
                self.state.history.append(row)
                if writer is not None:
                    for k, v in row.items():
                        if k not in ("iteration", "step") and isinstance(v, (int, float)) and math.isfinite(v):
                            writer.add_scalar(k, v, self.state.global_step)
                if not self.eval_enabled:
                    self._maybe_save_best(stats)
                if self.state.iteration % cfg.runner.save_interval == 0:
                    self.save(periodic=True)
                if progress:
                    progress.update(task_id, completed=min(self.state.global_step, cfg.total_steps),
                                    ret=f"{stats['train/return']:.1f}" if "train/return" in stats else "-",
                                    succ=f"{stats['train/success_rate']:.0%}" if "train/success_rate" in stats else "-",
                                    sps=f"{sps:,.0f}")
                if final:
                    break
                done_here = self.state.iteration - start_iteration
                if stop_after_iterations is not None and done_here >= stop_after_iterations:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if progress:
                progress.stop()
            if writer is not None:
                writer.close()
            if self._eval_env is not None:
                self._eval_env.close()
                self._eval_env = None
            if not interrupted:
                if self.state.iteration % cfg.runner.save_interval != 0:
                    self.save(periodic=False)
                if main:
                    self.write_logs()
                    if self.state.history:
                        self.plot()
        best_eval = self.state.best_eval
        result = {**self._window_stats(), "global_step": self.state.global_step, "iterations": self.state.iteration,
                  "best": (self._primary(best_eval) if best_eval else -math.inf) if self.eval_enabled
                  else self.state.best, "best_eval": best_eval or None, "final_eval": self.state.last_eval or None,
                  "wall_time_s": self.state.elapsed, "resumed_exact": self.resumed_exact}
        return result

    def _time_budget_spent(self) -> bool:
        # Ranks' clocks differ slightly: all stop when any has spent the budget, or they would deadlock.
        spent = torch.tensor([float(self.state.elapsed >= self.cfg.runner.max_time_s)])
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        return bool(spent.item())

    def _record_episodes(self, episodes: dict) -> None:
        if "return" in episodes:
            self.win_return.extend(episodes["return"].tolist())
            self.win_length.extend(episodes["length"].tolist())
        if "success" in episodes:
            self.win_success.extend(episodes["success"].tolist())

    # ----- evaluation -----
    def evaluate(self) -> dict:
        """Deterministic episodes of the current policy on the eval envs; returns its figures
        (``step``, ``iteration``, ``return``, ``return_std``, ``length``, ``success_rate`` (None
        when the task reports none), ``episodes``, ``seed``, ``wall_s``).

        The eval envs are built on the first call and restored to their state at construction
        before every later one (envs without a savable state are re-seeded instead), so every
        call plays the same episodes as a fresh `policy.evaluate` on newly made envs. The
        training RNG streams are saved and restored around it."""
        from roboreal.agents.policy import build_policy, evaluate

        cfg = self.cfg
        saved_rng = rng_state()
        t0 = time.perf_counter()
        try:
            if self._eval_env is None:
                from roboreal.envs import make

                self._eval_env = make(cfg.task, num_envs=cfg.runner.eval_episodes, device=cfg.device,
                                      backend=cfg.backend, seed=self.eval_seed, **cfg.env)
                self._eval_env_state = env_state_dict(self._eval_env)
            elif self._eval_env_state is not None:
                load_env_state(self._eval_env, self._eval_env_state)
            state = self.algo.policy_state()
            policy = build_policy(state).to(self.algo.device)
            # a savable env starts from its construction state (reset() as on a fresh env); others are re-seeded
            result = evaluate(policy, self._eval_env, obs_group=state["obs_group"],
                              seed=None if self._eval_env_state is not None else self.eval_seed)
        finally:
            set_rng_state(saved_rng)
        wall = time.perf_counter() - t0
        succ = result["success_rate"]
        figures = {"step": self.state.global_step, "iteration": self.state.iteration,
                   "return": result["mean_return"], "return_std": result["std_return"],
                   "length": result["mean_length"], "success_rate": None if succ != succ else succ,
                   "episodes": result["episodes"], "seed": self.eval_seed, "wall_s": round(wall, 3)}
        if "velocity_tracking_error" in result:
            figures["velocity_tracking_error"] = result["velocity_tracking_error"]
        return figures

    def _eval_key(self, figures: dict) -> tuple:
        """What best.pt maximizes: (success rate, return) with best_metric success, else (return,)."""
        if self.best_metric == "success":
            succ = figures.get("success_rate")
            return (-math.inf if succ is None else float(succ), float(figures["return"]))
        return (float(figures["return"]),)

    def _primary(self, figures: dict) -> float | None:
        return figures.get("success_rate") if self.best_metric == "success" else figures.get("return")

    def _evaluate_and_select(self) -> dict:
        """Evaluate (main rank), write best.pt on a strictly better evaluation; the row's eval/* entries."""
        figures = self.evaluate()
        self.state.eval_time += figures["wall_s"]
        self.state.elapsed += figures["wall_s"]
        self.state.last_eval = figures
        if not self.state.best_eval or self._eval_key(figures) > self._eval_key(self.state.best_eval):
            self.state.best_eval = dict(figures)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_save(self.checkpoint(full=False), self.ckpt_dir / "best.pt")  # its meta["eval"]: figures
        row = {"eval/return": figures["return"], "eval/return_std": figures["return_std"],
               "eval/length": figures["length"]}
        if figures["success_rate"] is not None:
            row["eval/success_rate"] = figures["success_rate"]
        if "velocity_tracking_error" in figures:
            row["eval/velocity_tracking_error"] = figures["velocity_tracking_error"]
        return row

    def _adopt_saved_best(self) -> None:
        """On resume: a best.pt evaluated after last.pt was written (the run was killed in between)
        stays the one to beat."""
        path = self.ckpt_dir / "best.pt"
        if not path.is_file():
            return
        figures = (load_checkpoint(path).get("meta") or {}).get("eval")
        if not figures or figures.get("seed") != self.eval_seed or \
                figures.get("episodes") != self.cfg.runner.eval_episodes:
            return
        if not self.state.best_eval or self._eval_key(figures) > self._eval_key(self.state.best_eval):
            self.state.best_eval = dict(figures)

    def _maybe_save_best(self, stats: dict) -> None:
        """best.pt without evaluation (``eval_interval=0``): the best running mean of training episodes."""
        key = "train/success_rate" if self.best_metric == "success" else "train/return"
        if key not in stats:
            return
        value = stats[key]
        if value > self.state.best:
            self.state.best = value
            if self.dist.is_main:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                atomic_save(self.checkpoint(full=False), self.ckpt_dir / "best.pt")

    def _progress(self):
        if not self.show_progress:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn(f"[bold]{self.cfg.task}[/] {self.cfg.algo}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("steps  return [cyan]{task.fields[ret]}[/]  success [green]{task.fields[succ]}[/]  "
                       "[magenta]{task.fields[sps]}[/] steps/s"),
            TimeElapsedColumn(), transient=False)

    def close(self) -> None:
        self.env.close()


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          dist: DistContext | None = None, stop_after_iterations: int | None = None) -> dict:
    """Train (or resume) a run; returns the final statistics."""
    runner = Runner(cfg, run_dir, dist=dist, progress=progress)
    try:
        return runner.run(resume=resume, stop_after_iterations=stop_after_iterations)
    finally:
        runner.close()


def resume(run_dir: str | Path, total_steps: int | None = None, progress: bool = True,
           dist: DistContext | None = None, stop_after_iterations: int | None = None,
           device: str | None = None) -> dict:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` (optionally to a new ``total_steps``;
    ``device`` places this process, e.g. ``cuda:LOCAL_RANK`` under torchrun)."""
    cfg = load_run_config(run_dir)
    if total_steps is not None and total_steps != cfg.total_steps:
        cfg = dataclasses.replace(cfg, total_steps=int(total_steps))
        if dist is None or dist.is_main:
            with open(Path(run_dir) / "config.yaml", "w") as f:
                yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    return train(cfg, run_dir, resume=True, progress=progress, dist=dist,
                 stop_after_iterations=stop_after_iterations)
