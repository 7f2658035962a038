"""The main job (`./dev demo`).

Today: list the tasks, roll out each robot in simulation and write videos, and measure
batched simulation throughput. (Training, export and ROS 2 deployment join this job as
those parts land.)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    parser = argparse.ArgumentParser(prog="roboreal-demo", description=__doc__)
    parser.add_argument("--out", default="outputs/demo", help="folder for videos")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args(argv)

    import torch

    from roboreal.cli import main as cli
    from roboreal.envs import make

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli(["tasks"])
    for task in ("cartpole-balance", "panda-reach", "panda-pick", "go1-walk"):
        cli(["view", task, "--steps", str(args.steps), "--video", str(out / f"{task}.mp4")])

    print("\nbatched simulation throughput (random actions, this machine):")
    for task, n in (("go1-walk", 256), ("panda-reach", 256), ("cartpole-balance", 1024)):
        env = make(task, num_envs=n, seed=0)
        env.reset()
        act = lambda: torch.rand(n, env.spec.action_size) * 2 - 1  # noqa: E731
        for _ in range(5):
            env.step(act())
        steps = 50
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(act())
        rate = n * steps / (time.perf_counter() - t0)
        print(f"  {task:18s} {n:5d} envs  {rate:10,.0f} env-steps/s")
        env.close()
    print(f"\nvideos in {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
