"""Velocity tracking error against time in the episode, in the training env and through the
deployment path, for one go1-walk run: where a policy loses on the way to the robot.

The env side plays `RUN`'s checkpoint deterministically on 32 episodes without domain
randomization (robots start moving: the task's random initial state); the deployment side
runs the bundle exported from it through sim2sim's nominal condition (observation builder,
ONNX runtime, safety chain, a perfect driver; robots start from a stand after the startup
ramp). Both print the mean error per 2 s of the 20 s episode (commands resample at 10 s).

    python benchmarks/tracking_by_time.py runs/go1_walk/NAME BUNDLE [--checkpoint last]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

EPISODES = 32
BUCKET_S = 2.0


def env_errors(run_dir: str, checkpoint: str, seed: int = 12345) -> dict[int, list[float]]:
    from roboreal.agents.policy import load_policy
    from roboreal.envs import make

    module, info = load_policy(run_dir, checkpoint)
    overrides = {**(info["env"] or {}), "randomization": {"enabled": False}}
    env = make(info["task"], num_envs=EPISODES, seed=seed, **overrides)
    per_bucket = int(round(BUCKET_S / env.spec.control_dt))
    obs, _ = env.reset()
    out: dict[int, list[float]] = collections.defaultdict(list)
    with torch.no_grad():
        for k in range(env.spec.max_episode_steps):
            obs, *_ = env.step(module(obs[info["obs_group"]]))
            out[k // per_bucket] += env.velocity_tracking_error().tolist()
    env.close()
    return out


def deployment_errors(bundle_dir: str) -> dict[int, list[float]]:
    from roboreal.policy_bundle import load_bundle
    from roboreal.sim2real.sim2sim import evaluate_deployment
    from roboreal.sim2real.simulated_driver import DriverCfg

    bundle = load_bundle(bundle_dir)
    per_bucket = int(round(BUCKET_S / float(bundle.manifest["control"]["dt"])))
    ticks: dict[int, int] = collections.defaultdict(int)
    out: dict[int, list[float]] = collections.defaultdict(list)

    def observer(env, world, t, step, images) -> None:
        out[ticks[world] // per_bucket].append(float(env.velocity_tracking_error()[world]))
        ticks[world] += 1

    evaluate_deployment(bundle, EPISODES, seed=0, driver=DriverCfg(), randomization=None, observer=observer)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("bundle")
    p.add_argument("--checkpoint", default="last")
    args = p.parse_args()
    rows = {"env (no randomization)": env_errors(args.run_dir, args.checkpoint),
            "deployment path (sim2sim nominal)": deployment_errors(args.bundle)}
    buckets = sorted(set().union(*rows.values()))
    print("| path | " + " | ".join(f"{b * BUCKET_S:.0f}-{(b + 1) * BUCKET_S:.0f} s" for b in buckets) + " |")
    print("|---|" + "---|" * len(buckets))
    for name, errors in rows.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(errors[b]):.3f}" if errors.get(b) else "-" for b in buckets)
              + " |")


if __name__ == "__main__":
    main()
