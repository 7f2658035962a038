"""Control rate, period jitter and sensor-to-command latency of the policy node over DDS.

For each control rate (default 50, 200 and 500 Hz) this exports a go1-walk bundle whose
control period is 1/rate (a one-iteration training run: the weights do not change the
timing), then runs, each in its own process, over real DDS (loopback, own domain id):

- the sim bridge (`roboreal sim-bridge --robot go1 --rate RATE`): JointState + Imu at
  the control rate, stamped when measured;
- a probe that sends velocity commands and records when each joint command arrives;
- the policy node (`PolicyNode`, in this process with a single-threaded executor on a
  thread, exactly as `roboreal deploy` runs it) so that every one of its samples is
  available, not only the diagnostics' per-second summary.

After --warmup seconds (startup ramp and fade-in done) it measures for --seconds:

- achieved rate: commands that arrived at the probe per second, and the node's ticks/s;
- period jitter: |period - 1/rate| of the node's control ticks and of the command
  arrivals at the probe (what the robot sees), p50 / p99;
- sensor-to-command latency: from a JointState's stamp (the bridge measured the joints)
  to the node publishing the command computed from it: one DDS hop, the wait for the
  next control step (up to a period with ``control_trigger=timer``, like a ros2_control
  controller; none with ``joint_states``, which steps when the state arrives),
  observation, inference and the safety chain; p50 / p99;
- overruns: steps the node itself started late (`timing.ControlSchedule`).

Each rate is measured for every --configs pair of the node's ``control_trigger`` (timer |
joint_states) and ``executor`` (single: rclpy's SingleThreadedExecutor | events: rclpy's
experimental EventsExecutor).

    python benchmarks/control_rate.py [--rates 50 200 500] [--seconds 10] [--configs timer/single ...]
                                      [--realtime-priority 50 | 0]

Numbers depend on the machine's load: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def export_bundle(rate: int, root: Path) -> Path:
    """A go1-walk bundle with control period 1/rate."""
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle as export

    # physics_dt * decimation = 1 / rate
    physics_dt, decimation = {50: (0.005, 4), 100: (0.005, 2), 200: (0.005, 1), 500: (0.002, 1),
                              1000: (0.001, 1)}.get(rate, (1.0 / rate, 1))
    cfg = resolve_config("go1-walk", "ppo", num_envs=4, total_steps=100, seed=0,
                         overrides=[f"env.physics_dt={physics_dt}", f"env.decimation={decimation}"])
    run_dir = root / f"go1_{rate}hz"
    train(cfg, run_dir, progress=False)
    return export(run_dir)


def probe_main(args: argparse.Namespace) -> None:
    """The probe process: velocity commands out, joint-command arrival times in, JSON to stdout."""
    import rclpy
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray

    from roboreal.robots.spec import load_robot

    ros = load_robot("go1").ros
    rclpy.init()
    node = Node("control_rate_probe")
    arrivals: list[float] = []
    node.create_subscription(Float64MultiArray, ros.joint_commands, lambda _m: arrivals.append(time.monotonic()), 10)
    cmd = node.create_publisher(Twist, ros.cmd_vel, 10)
    msg = Twist()
    msg.linear.x = 0.5
    node.create_timer(0.05, lambda: cmd.publish(msg))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    end = time.monotonic() + args.probe_seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.01)
    print(json.dumps(arrivals), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def percentiles(x: list[float] | np.ndarray) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    return float(np.percentile(x, 50)), float(np.percentile(x, 99))


def measure(rate: int, bundle: Path, warmup: float, seconds: float, trigger: str = "timer",
            executor_kind: str = "single", realtime: int = 0) -> dict:
    import rclpy

    from roboreal.sim2real.nodes.policy_node import PolicyNode, make_executor

    env = os.environ.copy()
    bridge = subprocess.Popen([sys.executable, "-m", "roboreal", "sim-bridge", "--robot", "go1", "--rate", str(rate)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = subprocess.Popen([sys.executable, __file__, "--probe", "--probe-seconds", str(warmup + seconds + 1.0)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rclpy.init(args=["control-rate-bench", "--ros-args", "-p", "robot:=go1", "-p", f"bundle:={bundle}",
                     "-p", f"control_trigger:={trigger}", "-p", f"executor:={executor_kind}",
                     "-p", f"realtime_priority:={realtime}"])
    node = PolicyNode()
    node.window = collections.deque()  # keep every sample (the node keeps a few seconds for its diagnostics)
    executor = make_executor(executor_kind)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        node.spin(executor, stop)  # exactly as `roboreal deploy` runs it

    thread = threading.Thread(target=spin, daemon=True)
    t_start = time.monotonic()
    thread.start()
    try:
        probe_out, _ = probe.communicate(timeout=warmup + seconds + 60)
    finally:
        stop.set()
        thread.join(timeout=5)
        mode = node.mode
        windows = list(node.window)
        ticks = [t for t, *_ in windows]
        overruns = node.schedule.overruns.total
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        bridge.terminate()
        bridge.wait(timeout=10)
    t0, t1 = t_start + warmup, t_start + warmup + seconds
    sel = [i for i, t in enumerate(ticks) if t0 <= t <= t1]
    latency = [windows[i][1] for i in sel if windows[i][1] is not None]
    node_periods = np.diff([ticks[i] for i in sel])
    arrivals = np.array([a for a in json.loads(probe_out.strip().splitlines()[-1]) if t0 <= a <= t1])
    arrival_periods = np.diff(arrivals)
    period = 1.0 / rate
    return {
        "rate": rate, "trigger": trigger, "executor": executor_kind, "realtime_priority": realtime, "mode": mode,
        "samples": len(sel),
        "overruns": overruns,
        "node_rate": len(sel) / seconds, "arrival_rate": len(arrivals) / seconds,
        "node_jitter": percentiles(np.abs(node_periods - period)),
        "arrival_jitter": percentiles(np.abs(arrival_periods - period)),
        "latency": percentiles(latency),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=int, nargs="+", default=[50, 200, 500])
    p.add_argument("--configs", nargs="+", default=["timer/single", "timer/events", "joint_states/single",
                                                    "joint_states/events"],
                   help="control_trigger/executor pairs of the policy node to measure")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    p.add_argument("--realtime-priority", type=int, default=50,
                   help="the policy node's realtime_priority (SCHED_FIFO of its control thread, as the robot "
                        "configs set it; 0: normal scheduling)")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring (startup ramp, fade-in)")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        return probe_main(args)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            bundle = export_bundle(rate, Path(tmp))
            for config in args.configs:
                trigger, executor_kind = config.split("/")
                row = measure(rate, bundle, args.warmup, args.seconds, trigger, executor_kind, args.realtime_priority)
                print(json.dumps(row), flush=True)
                rows.append(row)
    ms = 1e3
    print()
    print(f"{'target Hz':>9s} {'trigger/executor':>20s} {'node Hz':>8s} {'robot Hz':>9s} {'tick jitter p50/p99 ms':>23s} "
          f"{'arrival jitter p50/p99 ms':>26s} {'sensor->command p50/p99 ms':>27s} {'overruns':>8s}")
    for r in rows:
        nj, aj, lat = r["node_jitter"], r["arrival_jitter"], r["latency"]
        print(f"{r['rate']:9d} {r['trigger'] + '/' + r['executor']:>20s} {r['node_rate']:8.1f} {r['arrival_rate']:9.1f} "
              f"{nj[0] * ms:11.3f} / {nj[1] * ms:7.3f}   {aj[0] * ms:12.3f} / {aj[1] * ms:7.3f}   "
              f"{lat[0] * ms:12.3f} / {lat[1] * ms:7.3f} {r['overruns']:8d}")


if __name__ == "__main__":
    main()
