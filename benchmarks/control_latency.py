"""Per-control-step cost on the robot: policy inference + the whole safety chain.

For each robot's bundle (go1-walk PPO, panda-reach SAC, cartpole DQN) and each runtime
(ONNX Runtime, TorchScript), times `bundle.act(obs)` followed by `chain.step(action,
state, now)` — what the policy node does every control period — over many steps with
realistic, changing inputs. Prints p50/p99 in microseconds side by side and the
TorchScript/ONNX ratio. Target: p99 under 300 us for the go1 policy on a 2-core CPU.

    python benchmarks/control_latency.py [--steps 5000] [--bundles DIR ...]

Without --bundles it trains tiny runs (weights do not affect the timing) and exports them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = (("go1-walk", "ppo", 200), ("panda-reach", "sac", 64), ("cartpole-balance-discrete", "dqn", 128))


def make_bundles(root: Path) -> list[Path]:
    from roboreal.agents.runner import resolve_config, train
    from roboreal.sim2real.bundle import export_bundle

    out = []
    for task, algo, steps in RUNS:
        run_dir = root / task
        train(resolve_config(task, algo, num_envs=4, total_steps=steps, seed=0), run_dir, progress=False)
        out.append(export_bundle(run_dir))
    return out


def measure(bundle_dir: Path, runtime: str, steps: int) -> dict:
    import torch

    from roboreal.sim2real.bundle import load_bundle, load_manifest_robot
    from roboreal.sim2real.safety import RobotState, SafetyChain

    torch.set_num_threads(1)
    bundle = load_bundle(bundle_dir, runtime=runtime)
    m = bundle.manifest
    spec = load_manifest_robot(m)
    dt = float(m["control"]["dt"])
    chain = SafetyChain(spec, bundle.action_mapping, dt=dt)
    rng = np.random.default_rng(0)
    n = len(spec.actuated_joints)
    q0 = np.array(m["default_pose"], dtype=np.float64)
    quat = np.array([1.0, 0.0, 0.0, 0.0]) if spec.kind == "quadruped" else None

    def state(now: float) -> RobotState:
        return RobotState(position=q0 + rng.normal(0, 0.02, n), velocity=rng.normal(0, 0.1, n), orientation=quat,
                          joint_state_stamp=now, imu_stamp=now if quat is not None else None, command_stamp=now)

    now = 0.0
    chain.reset(state(now), now)
    obs = rng.normal(0, 1, (steps, bundle.obs_size)).astype(np.float32)
    # skip the startup ramp so the whole chain (policy mode, fade-in done) is timed
    ramp = spec.safety.startup_ramp_time + spec.safety.fade_in_time
    while now < ramp + dt:
        now += dt
        chain.step(bundle.normalized_action(obs[0]), state(now), now)
    times = np.empty(steps)
    for i in range(steps):
        now += dt
        s = state(now)
        t0 = time.perf_counter_ns()
        cmd = chain.step(bundle.normalized_action(obs[i]), s, now)
        times[i] = (time.perf_counter_ns() - t0) / 1e3
        assert np.isfinite(cmd.values).all()
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "mean": float(times.mean()), "mode": cmd.mode}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--bundles", nargs="*", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundles = args.bundles or make_bundles(Path(tmp))
        print(f"{'bundle':28s} {'onnx p50':>9s} {'onnx p99':>9s} {'ts p50':>9s} {'ts p99':>9s} {'ts/onnx p99':>12s}")
        for b in bundles:
            onnx = measure(b, "onnx", args.steps)
            ts = measure(b, "torchscript", args.steps)
            name = f"{b.parent.name}"
            print(f"{name:28s} {onnx['p50']:9.1f} {onnx['p99']:9.1f} {ts['p50']:9.1f} {ts['p99']:9.1f} "
                  f"{ts['p99'] / onnx['p99']:11.2f}x")
        print("microseconds per control step (policy inference + full safety chain)")


if __name__ == "__main__":
    main()
