"""Per-control-step cost on the robot: raw sensor readings -> command, as the policy node runs it.

For each robot's bundle (go1-walk PPO, panda-reach SAC, cartpole DQN) and each runtime
(ONNX Runtime, TorchScript), times one control step of the policy node's ROS-free core,
`PolicyController` (`roboreal.sim2real.nodes.controller`, the code the node and sim2sim
run): the raw readings as taken from the ROS messages (JointState by name, Imu, Twist /
goal pose) handed to its `ObservationBuilder`, each sensor reading screened by the safety
chain on arrival (as the node's callbacks do), then `PolicyController.step`: observation
build, `bundle.normalized_action`, the whole `SafetyChain.step`, the command. Only ROS
message (de)serialization and DDS are left out (see benchmarks/control_rate.py for those).

Readings change every step (noise around the default pose). The startup ramp and fade-in
run untimed first; every timed step must come out of the chain in ``policy`` mode with
the policy run, else the benchmark refuses to report (the mode counts are printed). Prints
p50/p99 in microseconds side by side, the TorchScript/ONNX ratio and p99 against the
target: under 300 us for the go1 policy on a 2-core CPU.

    python benchmarks/control_latency.py [--steps 5000] [--bundles DIR ...]

Without --bundles it trains tiny runs (weights do not affect the timing) and exports them.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_P99_US = 300.0  # go1 policy, 2-core CPU
RUNS = (("go1-walk", "ppo", 200), ("panda-reach", "sac", 64), ("cartpole-balance-discrete", "dqn", 128))


def make_bundles(root: Path) -> list[Path]:
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle

    out = []
    for task, algo, steps in RUNS:
        run_dir = root / task
        train(resolve_config(task, algo, num_envs=4, total_steps=steps, seed=0), run_dir, progress=False)
        out.append(export_bundle(run_dir))
    return out


class _Sensors:
    """Precomputed raw readings for `steps` control steps (drawn before timing, so the
    random draws are not timed): what the robot's JointState / Imu / Twist / poses carry."""

    def __init__(self, ctl, steps: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        b, spec = ctl.builder, ctl.spec
        q0 = np.array([spec.joints[spec.joint_names.index(n)].default if n in spec.joint_names
                       else 0.5 * (spec.gripper.open + spec.gripper.closed) / len(spec.gripper.joints)
                       for n in b.tracked])
        self.names = list(b.tracked)
        self.q = q0 + rng.normal(0, 0.02, (steps, len(q0)))
        self.dq = rng.normal(0, 0.1, (steps, len(q0)))
        self.imu = b.needs_imu
        self.quat = np.array([0.0, 0.0, 0.0, 1.0]) + np.concatenate(  # ROS x, y, z, w; near upright
            [rng.normal(0, 0.01, (steps, 3)), np.zeros((steps, 1))], axis=1)
        self.gyro = rng.normal(0, 0.05, (steps, 3))
        self.accel = np.array([0.0, 0.0, 9.81]) + rng.normal(0, 0.1, (steps, 3))
        self.cmd_vel = any(t.source == "cmd_vel" for t in b.terms)
        self.cmd = rng.uniform(-0.5, 0.5, (steps, 3))  # clipped to the trained ranges by set_cmd_vel
        box = ((ctl.manifest.get("inputs") or {}).get("goal") or {}).get("box")
        center = 0.5 * (np.array(box["min"]) + np.array(box["max"])) if box else np.zeros(3)
        self.goal = center + rng.normal(0, 0.01, (steps, 3))
        self.obj = center + rng.normal(0, 0.01, (steps, 3))

    def deliver(self, ctl, i: int, now: float):
        """Step i: the readings into the builder, screened on arrival as the node's
        callbacks do (`PolicyNode._on_joint_state` / `_on_imu` with the timer trigger),
        then the control step (`PolicyNode._step` minus publishing)."""
        b, chain = ctl.builder, ctl.chain
        b.set_joint_state(self.names, self.q[i], self.dq[i], arrival=now, header_stamp=now)
        chain.screen(b.robot_state(), now)
        if self.imu:
            b.set_imu(self.quat[i], self.gyro[i], now, self.accel[i])
            chain.screen(b.robot_state(), now)
        if self.cmd_vel:
            ctl.set_cmd_vel(*self.cmd[i], arrival=now)
        if b.needs_goal:
            b.set_goal(self.goal[i], now)
        if b.needs_object:
            b.set_object_pose(self.obj[i], now, now)
        if not ctl.started:
            if not ctl.start(now):
                raise RuntimeError(f"the controller does not start on these readings: {ctl.waiting_for}")
            return None
        return ctl.step(now)


def measure(bundle_dir: Path, runtime: str, steps: int) -> dict:
    import torch

    from roboreal.policy_bundle import load_bundle, load_manifest_robot
    from roboreal.sim2real.nodes.controller import PolicyController

    torch.set_num_threads(1)
    bundle = load_bundle(bundle_dir, runtime=runtime)
    spec = load_manifest_robot(bundle.manifest)
    # as the policy node builds it (gains travel with the command only on position_gains)
    ctl = PolicyController(bundle, spec, gains="commanded" if spec.ros.command_interface == "position_gains"
                           else "fixed")
    dt = ctl.dt
    # untimed: start, the startup ramp and the fade-in, until the chain runs the policy
    warmup = int(np.ceil((spec.safety.startup_ramp_time + spec.safety.fade_in_time) / dt)) + 2
    sensors = _Sensors(ctl, warmup + steps)
    now = 0.0
    for i in range(warmup):
        now += dt
        out = sensors.deliver(ctl, i, now)
    if out is None or out.cmd.mode != "policy":
        raise RuntimeError(f"{bundle_dir}: the chain is in {out and out.cmd.mode!r} mode after the startup ramp "
                           f"and fade-in ({ctl.chain.faults or ctl.waiting_for})")
    times = np.empty(steps)
    modes: collections.Counter = collections.Counter()
    for i in range(steps):
        now += dt
        t0 = time.perf_counter_ns()
        out = sensors.deliver(ctl, warmup + i, now)
        times[i] = (time.perf_counter_ns() - t0) / 1e3
        modes[out.cmd.mode if out.pending is None else f"{out.cmd.mode} (policy not run: {out.pending})"] += 1
        assert np.isfinite(out.cmd.values).all()
    if modes["policy"] != steps:  # a step that did not run the policy + full chain is not what this times
        raise RuntimeError(f"{bundle_dir} ({runtime}): refusing to report, timed steps by chain mode: "
                           f"{dict(modes)}; faults {ctl.chain.faults}")
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
            "mean": float(times.mean()), "modes": dict(modes)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--bundles", nargs="*", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundles = args.bundles or make_bundles(Path(tmp))
        print(f"{'bundle':28s} {'onnx p50':>9s} {'onnx p99':>9s} {'ts p50':>9s} {'ts p99':>9s} {'ts/onnx p99':>12s} "
              f"{'onnx p99/target':>15s}  timed steps by chain mode")
        for b in bundles:
            onnx = measure(b, "onnx", args.steps)
            ts = measure(b, "torchscript", args.steps)
            name = f"{b.parent.name}"
            modes = ", ".join(f"{k} {v}" for k, v in sorted({**onnx["modes"], **ts["modes"]}.items()))
            print(f"{name:28s} {onnx['p50']:9.1f} {onnx['p99']:9.1f} {ts['p50']:9.1f} {ts['p99']:9.1f} "
                  f"{ts['p99'] / onnx['p99']:11.2f}x {onnx['p99'] / TARGET_P99_US:14.2f}x  {modes} (each runtime)")
        print(f"microseconds per control step: raw readings -> ObservationBuilder -> policy -> full safety chain "
              f"-> command (PolicyController, as the policy node); target p99 {TARGET_P99_US:.0f} us (go1)")


if __name__ == "__main__":
    main()
