"""The runner's periodic evaluation, and how it chooses best.pt.

The Stable-Baselines3 ``EvalCallback`` / RL Zoo convention: every ``runner.eval_interval``
iterations, and once when training ends, the main rank runs ``runner.eval_episodes``
deterministic episodes of the current policy (`policy.build_policy` of ``policy_state()``,
i.e. exactly what a checkpoint holds) on separate eval envs: the same task and env
overrides, one env per episode, seed ``seed + EVAL_SEED_OFFSET`` (10_000; training envs use
``seed + 1000 * rank``). The eval envs are built once, lazily, and every evaluation starts
them from their state at construction, so each evaluation plays the same episodes and its
figure equals a fresh `policy.evaluate` of that policy on ``make(task,
num_envs=eval_episodes, seed=seed + 10_000)``. Evaluation leaves the training RNG streams
alone (a resumed run stays bit-identical). Logged as ``eval/return``, ``eval/return_std``,
``eval/length`` and ``eval/success_rate`` (goal tasks) to TensorBoard and progress.csv.

``best.pt`` is the best evaluated policy: by success rate with the mean return breaking
ties on goal tasks, else by mean return (``runner.best_metric``, `eval_key`); a strictly
better evaluation replaces it. Its ``meta["eval"]`` holds the figures and the step they
come from (as does any checkpoint written at an evaluation iteration, e.g. the final
``last.pt``). The best evaluation is part of the resume state, and a resumed run also reads
``best.pt``'s figures, so it never replaces a better best.pt. Under torchrun only rank 0
evaluates; the other ranks carry on to the next collective. ``runner.eval_interval=0``
turns evaluation off: best.pt is then the policy with the best running mean of the last
``stats_window`` *training* episodes (success rate on goal tasks), a cheap but biased
selector (stochastic actions, and a mean over policies that kept changing).
"""

from __future__ import annotations

import math
import time

import torch

from roboreal.agents.checkpoints import rng_state, set_rng_state
from roboreal.agents.env_state import env_state_dict, load_env_state
from roboreal.agents.run_config import TrainConfig

EVAL_SEED_OFFSET = 10_000  # eval envs are seeded seed + EVAL_SEED_OFFSET (training envs: seed + 1000 * rank)


class PolicyEvaluator:
    """Deterministic episodes of a checkpoint's policy on the run's eval envs, the same
    episodes at every call."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.seed = cfg.seed + EVAL_SEED_OFFSET
        self._env = None  # built on the first evaluation (main rank only)
        self._env_state = None  # its state at construction, restored before every evaluation

    def evaluate(self, policy_state: dict, device: torch.device) -> dict:
        """Figures of the policy a checkpoint's ``policy`` entry describes: ``return``,
        ``return_std``, ``length``, ``success_rate`` (None when the task reports none),
        ``episodes``, ``seed``, ``wall_s`` (and ``velocity_tracking_error`` where the task has it).

        The eval envs are built on the first call and restored to their state at construction
        before every later one (envs without a savable state are re-seeded instead). The
        training RNG streams are saved and restored around it."""
        from roboreal.agents.policy import build_policy, evaluate

        cfg = self.cfg
        saved_rng = rng_state()
        t0 = time.perf_counter()
        try:
            if self._env is None:
                from roboreal.envs import make

                self._env = make(cfg.task, num_envs=cfg.runner.eval_episodes, device=cfg.device,
                                 backend=cfg.backend, seed=self.seed, **cfg.env)
                self._env_state = env_state_dict(self._env)
            elif self._env_state is not None:
                load_env_state(self._env, self._env_state)
            policy = build_policy(policy_state).to(device)
            # a savable env starts from its construction state (reset() as on a fresh env); others are re-seeded
            result = evaluate(policy, self._env, obs_group=policy_state["obs_group"],
                              seed=None if self._env_state is not None else self.seed)
        finally:
            set_rng_state(saved_rng)
        wall = time.perf_counter() - t0
        succ = result["success_rate"]
        figures = {"return": result["mean_return"], "return_std": result["std_return"],
                   "length": result["mean_length"], "success_rate": None if succ != succ else succ,
                   "episodes": result["episodes"], "seed": self.seed, "wall_s": round(wall, 3)}
        if "velocity_tracking_error" in result:
            figures["velocity_tracking_error"] = result["velocity_tracking_error"]
        return figures

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def eval_key(figures: dict, best_metric: str) -> tuple:
    """What best.pt maximizes: (success rate, return) with best_metric success, else (return,)."""
    if best_metric == "success":
        succ = figures.get("success_rate")
        return (-math.inf if succ is None else float(succ), float(figures["return"]))
    return (float(figures["return"]),)


def primary_figure(figures: dict, best_metric: str) -> float | None:
    """The figure best.pt is chosen by: the success rate, or the mean return."""
    return figures.get("success_rate") if best_metric == "success" else figures.get("return")


def eval_row(figures: dict) -> dict:
    """The ``eval/*`` entries of a progress row (TensorBoard and progress.csv)."""
    row = {"eval/return": figures["return"], "eval/return_std": figures["return_std"],
           "eval/length": figures["length"]}
    if figures["success_rate"] is not None:
        row["eval/success_rate"] = figures["success_rate"]
    if "velocity_tracking_error" in figures:
        row["eval/velocity_tracking_error"] = figures["velocity_tracking_error"]
    return row
