"""Training speed: roboreal vs Stable-Baselines3 to the same target, same machine, same run.

Both train on the same roboreal task (SB3 through the `make_sb3_vec_env` adapter, with
SB3's recommended/default settings for the algorithm); both are judged by the same
criterion: the running mean over the last 100 finished training episodes of the
success rate (goal tasks) or the return reaching the target. Reported per case: env
steps and wall-clock to the target, and the wall-clock ratio SB3 / roboreal.

    python benchmarks/train_vs_sb3.py                     # all cases
    python benchmarks/train_vs_sb3.py --cases cartpole-ppo --sb3-cap 600

A case where SB3 does not reach the target within --sb3-cap seconds is printed as
"> cap" and its ratio as a lower bound.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

# name: (task, roboreal algo, metric, target, roboreal step budget, sb3 algo)
CASES = {
    "cartpole-ppo": ("cartpole-balance", "ppo", "return", 475.0, 300_000, "ppo"),
    "panda-reach-ppo": ("panda-reach", "ppo", "success", 0.9, 600_000, "ppo"),
    "panda-reach-sparse-sac-her": ("panda-reach-sparse", "sac", "success", 0.9, 60_000, "sac_her"),
}


def roboreal_to_target(task: str, algo: str, metric: str, target: float, budget: int, seed: int) -> dict:
    from roboreal.agents.runner import resolve_config, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config(task, algo, seed=seed, total_steps=budget)
        t0 = time.perf_counter()
        train(cfg, tmp, progress=False)
        wall = time.perf_counter() - t0
        column = "train/success_rate" if metric == "success" else "train/return"
        with open(Path(tmp) / "progress.csv") as f:
            for row in csv.DictReader(f):
                if row.get(column) not in (None, "") and float(row[column]) >= target:
                    return {"steps": int(row["step"]), "time": float(row["time_s"]), "reached": True}
    return {"steps": budget, "time": wall, "reached": False}


class _TargetCallback:
    """Stops SB3 when the running mean of the last 100 episodes reaches the target."""

    def __init__(self, metric: str, target: float, cap_s: float):
        from stable_baselines3.common.callbacks import BaseCallback

        outer = self

        class CB(BaseCallback):
            def _on_training_start(self) -> None:
                outer.t0 = time.perf_counter()

            def _on_step(self) -> bool:
                for done, info in zip(self.locals["dones"], self.locals["infos"]):
                    if not done:
                        continue
                    if metric == "success":
                        outer.window.append(float(info.get("is_success", 0.0)))
                    elif "episode" in info:
                        outer.window.append(float(info["episode"]["r"]))
                if len(outer.window) >= 20 and np.mean(outer.window) >= target:
                    outer.reached = True
                    outer.steps, outer.time = self.num_timesteps, time.perf_counter() - outer.t0
                    return False
                if time.perf_counter() - outer.t0 > cap_s:
                    outer.steps, outer.time = self.num_timesteps, time.perf_counter() - outer.t0
                    return False
                return True

        self.callback = CB()
        self.window: deque = deque(maxlen=100)
        self.reached = False
        self.steps = 0
        self.time = 0.0
        self.t0 = 0.0


def sb3_to_target(task: str, sb3_algo: str, metric: str, target: float, cap_s: float, seed: int) -> dict:
    from stable_baselines3 import PPO, SAC, HerReplayBuffer
    from stable_baselines3.common.vec_env import VecMonitor

    from roboreal.envs.gym_adapters import make_sb3_vec_env

    cb = _TargetCallback(metric, target, cap_s)
    if sb3_algo == "ppo":
        # SB3's defaults (n_steps 2048, batch 64, 10 epochs, lr 3e-4) with 8 envs, as in its zoo for small tasks
        venv = VecMonitor(make_sb3_vec_env(task, num_envs=8, seed=seed))
        policy = "MultiInputPolicy" if task.startswith("panda") else "MlpPolicy"
        model = PPO(policy, venv, seed=seed, device="cpu", verbose=0)
    else:
        # SB3's documented HER setup: SAC + HerReplayBuffer(future, k=4), 1 env
        venv = VecMonitor(make_sb3_vec_env(task, num_envs=1, seed=seed))
        model = SAC("MultiInputPolicy", venv, replay_buffer_class=HerReplayBuffer,
                    replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
                    learning_starts=1000, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=10**9, callback=cb.callback)
    venv.close()
    return {"steps": cb.steps, "time": cb.time, "reached": cb.reached}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--sb3-cap", type=float, default=900.0, help="seconds before SB3 is stopped")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.cases:
        task, algo, metric, target, budget, sb3_algo = CASES[name]
        ours = roboreal_to_target(task, algo, metric, target, budget, args.seed)
        print(f"{name}: roboreal {ours}", flush=True)
        ref = sb3_to_target(task, sb3_algo, metric, target, args.sb3_cap, args.seed)
        print(f"{name}: sb3      {ref}", flush=True)
        rows.append((name, metric, target, ours, ref))
    print()
    print(f"{'case':28s} {'target':>14s} {'roboreal steps':>15s} {'time s':>8s} {'SB3 steps':>10s} {'time s':>9s} "
          f"{'SB3/roboreal time':>18s}")
    for name, metric, target, ours, ref in rows:
        def fmt_time(r):
            return f"{r['time']:.0f}" if r["reached"] else f">{r['time']:.0f}"

        ratio = ref["time"] / ours["time"] if ours["reached"] else float("nan")
        bound = "" if ref["reached"] else ">"
        print(f"{name:28s} {metric + ' ' + str(target):>14s} {ours['steps']:15,d} {fmt_time(ours):>8s} "
              f"{ref['steps']:10,d} {fmt_time(ref):>9s} {bound + format(ratio, '.1f') + 'x':>18s}")


if __name__ == "__main__":
    main()
