"""The training runner: the iteration loop, logging, checkpoints and exact resume.

A run directory holds::

    config.yaml            resolved config (task, algo, seed, env overrides, hyper-parameters, runner)
    checkpoints/last.pt    everything needed to resume (replay buffer included)
    checkpoints/best.pt    the best *evaluated* policy so far (see `roboreal.agents.run_eval`)
    checkpoints/iter_XXXXXX.pt   periodic snapshots (no replay buffer)
    tb/                    TensorBoard logs
    progress.csv           one row per iteration (``eval/*`` columns filled on evaluation iterations)
    metrics.json           summary (final training figures, best and final evaluation, steps, wall time, steps/s)
    learning_curve.png     return (and success rate) against env steps, evaluations as markers

Checkpoints are written at iteration boundaries (`roboreal.agents.checkpoints`: plain
tensors and containers, atomically). ``last.pt`` holds the algorithm state (networks,
optimizers, normalizers, replay buffer, current observation, counters), every RNG (torch,
CUDA, numpy, python ``random``), the env state (its generator, the randomizer's rng and
sampled values, the simulation state of every world and every task buffer; see
`roboreal.agents.env_state`) and the runner's statistics. Resuming rebuilds the env,
restores all of it and continues: on the same device and thread settings the run ends
with exactly the parameters of an uninterrupted run (tested). A run killed mid-way
repeats the iterations after its last checkpoint.

The run's config (presets, overrides): `roboreal.agents.run_config`; which algorithms
exist: `roboreal.agents.registry`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from roboreal.agents.base import Algorithm, DistContext
from roboreal.agents.checkpoints import (CHECKPOINT_FORMAT, atomic_save, load_checkpoint, rng_state, seed_everything,
                                         set_rng_state)
from roboreal.agents.env_state import env_state_dict, load_env_state
from roboreal.agents.registry import algorithm_classes
from roboreal.agents.run_config import TrainConfig, load_run_config, write_run_config
from roboreal.agents.run_eval import PolicyEvaluator, eval_key, eval_row, primary_figure
from roboreal.agents.run_logs import plot_learning_curve, progress_bar, write_progress_csv
from roboreal.config import ConfigError, to_dict


@dataclass
class RunState:
    """The runner's own progress (saved in last.pt for resume)."""

    iteration: int = 0
    global_step: int = 0
    best: float = -math.inf  # best running mean of training episodes (best.pt's rule without evaluation)
    elapsed: float = 0.0  # training wall time, evaluations included
    history: list = field(default_factory=list)
    best_eval: dict = field(default_factory=dict)  # figures of the best evaluation ({} before the first)
    last_eval: dict = field(default_factory=dict)  # figures of the latest evaluation
    eval_time: float = 0.0  # seconds spent evaluating (part of elapsed)


class Runner:
    """One training run: its env and algorithm, the loop (`run`), checkpoints, evaluation and logs."""

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
        self.evaluator = PolicyEvaluator(cfg)

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
        write_progress_csv(self.state.history, self.run_dir / "progress.csv")
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
                "best_by": "eval", f"best_{self.best_metric}": primary_figure(best, self.best_metric) if best else None,
                "best_step": best.get("step"), "best_eval": best or None, "final_eval": self.state.last_eval or None,
                "eval_interval": self.cfg.runner.eval_interval, "eval_episodes": self.cfg.runner.eval_episodes,
                "eval_seed": self.evaluator.seed, "eval_time_s": round(self.state.eval_time, 2)})
        else:
            summary.update({"best_by": f"train/{self.best_metric} (running mean of {self.cfg.runner.stats_window} "
                                       "training episodes)",
                            f"best_{self.best_metric}": None if self.state.best == -math.inf else self.state.best})
        with open(self.run_dir / "metrics.json", "w") as f:
            json.dump(summary, f, indent=2)

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
            write_run_config(self.run_dir, to_dict(cfg))
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.state.global_step if resume else None)
        progress = progress_bar(cfg.task, cfg.algo) if self.show_progress else None
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
            self.evaluator.close()
            if not interrupted:
                if self.state.iteration % cfg.runner.save_interval != 0:
                    self.save(periodic=False)
                if main:
                    self.write_logs()
                    if self.state.history:
                        plot_learning_curve(self.state.history, self.run_dir / "learning_curve.png",
                                            f"{cfg.task} / {cfg.algo}", cfg.runner.stats_window,
                                            cfg.runner.eval_episodes)
        best_eval = self.state.best_eval
        result = {**self._window_stats(), "global_step": self.state.global_step, "iterations": self.state.iteration,
                  "best": (primary_figure(best_eval, self.best_metric) if best_eval else -math.inf) if self.eval_enabled
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
        """Deterministic episodes of the current policy on the eval envs (`PolicyEvaluator`):
        its figures, with the ``step`` and ``iteration`` they come from."""
        return {"step": self.state.global_step, "iteration": self.state.iteration,
                **self.evaluator.evaluate(self.algo.policy_state(), self.algo.device)}

    def _better(self, figures: dict, than: dict) -> bool:
        return eval_key(figures, self.best_metric) > eval_key(than, self.best_metric)

    def _evaluate_and_select(self) -> dict:
        """Evaluate (main rank), write best.pt on a strictly better evaluation; the row's eval/* entries."""
        figures = self.evaluate()
        self.state.eval_time += figures["wall_s"]
        self.state.elapsed += figures["wall_s"]
        self.state.last_eval = figures
        if not self.state.best_eval or self._better(figures, self.state.best_eval):
            self.state.best_eval = dict(figures)
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_save(self.checkpoint(full=False), self.ckpt_dir / "best.pt")  # its meta["eval"]: figures
        return eval_row(figures)

    def _adopt_saved_best(self) -> None:
        """On resume: a best.pt evaluated after last.pt was written (the run was killed in between)
        stays the one to beat."""
        path = self.ckpt_dir / "best.pt"
        if not path.is_file():
            return
        figures = (load_checkpoint(path).get("meta") or {}).get("eval")
        if not figures or figures.get("seed") != self.evaluator.seed or \
                figures.get("episodes") != self.cfg.runner.eval_episodes:
            return
        if not self.state.best_eval or self._better(figures, self.state.best_eval):
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
            write_run_config(run_dir, to_dict(cfg))
    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    return train(cfg, run_dir, resume=True, progress=progress, dist=dist,
                 stop_after_iterations=stop_after_iterations)
