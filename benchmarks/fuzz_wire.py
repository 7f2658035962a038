"""The long DDS fuzz campaign: hostile sessions against `roboreal deploy`, every command checked.

The same hostile driver and checks as tests/test_safety_wire.py (`sim2real/nodes/hostile.py`,
`sim2real/safety/wire.py`), for longer and with fresh random sessions: for each case (robot,
command interface, control trigger / executor) a policy node runs as a subprocess over
loopback DDS, and hypothesis draws hostile sessions (NaN/inf/huge/impossible readings, wrong
names/lengths/order, stale/frozen/future/zero stamps, floods, silence, wild takeovers,
e-stops, resets, releases) for --seconds; each session starts from policy mode.

    python benchmarks/fuzz_wire.py                      # 4 cases x 150 s, > 10,000 commands
    python benchmarks/fuzz_wire.py --seconds 30 --cases go1/forward_command/timer/single
    python benchmarks/fuzz_wire.py --json fuzz.json

Prints, per case and in total: commands checked (each with its audit), violations per
invariant, the largest command change as a fraction of the rate limit, the modes the
commands were sent in, how often the torque bound had to give way to the rate limit (fixed
gains), and whether the node survived. Exit status 1 if anything was violated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

CASES = ["go1/forward_command/timer/single", "go1/position_gains/joint_states/events",
         "panda/forward_command/timer/single", "panda/forward_command/joint_states/single"]


def run_case(case: str, bundle: Path, seconds: float, log: Path, seed: int) -> dict:
    import yaml
    from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings

    from roboreal.robots.spec import load_robot
    from roboreal.sim2real.nodes.hostile import HostileRobot, fuzz_actions, start_policy_node, stop_process

    robot_name, interface, trigger, executor = case.split("/")
    spec = load_robot(robot_name)
    dt = float(yaml.safe_load((bundle / "manifest.yaml").read_text())["control"]["dt"])
    robot = HostileRobot(spec, interface=interface)
    node = start_policy_node(bundle, robot_name, log, interface, f"{trigger}/{executor}")
    stats = {"acts": 0, "sessions": 0, "recoveries_failed": 0}
    t0 = time.monotonic()
    try:
        robot.attach(dt)
        if not robot.wait_mode("policy", 30):
            raise RuntimeError(f"{case}: the node never reached policy mode (log: {log})")
        end = time.monotonic() + seconds

        @hypothesis_seed(seed)
        @settings(max_examples=max(10, int(3 * seconds)), deadline=None, phases=[Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        @given(acts=fuzz_actions(spec))
        def session(acts):
            if time.monotonic() > end or node.poll() is not None:
                return
            if not robot.recover():
                stats["recoveries_failed"] += 1
            stats["acts"] += robot.play(acts, deadline=end)
            stats["sessions"] += 1
            done = int(time.monotonic() - t0)
            print(f"\r  {case}: {robot.checker.commands} commands, {robot.checker.total_violations} violations, "
                  f"{done} s", end="", flush=True)

        session()
        robot.stream(0.5)
        report = robot.report()
    finally:
        alive = node.poll() is None
        rc = stop_process(node)
        robot.close()
    print()
    text = log.read_text()
    report.update(stats, case=case, node_alive=alive, exit_code=rc, wall_s=time.monotonic() - t0,
                  tracebacks=text.count("Traceback"), runtime_warnings=text.count("RuntimeWarning"))
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=CASES, help="robot/interface/trigger/executor")
    p.add_argument("--seconds", type=float, default=150.0, help="fuzzing seconds per case")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))

    from roboreal.sim2real.nodes.hostile import tiny_bundle
    from roboreal.sim2real.safety.wire import describe

    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {r: tiny_bundle(r, Path(tmp)) for r in sorted({c.split("/")[0] for c in args.cases})}
        for i, case in enumerate(args.cases):
            reports.append(run_case(case, bundles[case.split("/")[0]], args.seconds, Path(tmp) / f"node_{i}.log",
                                    args.seed + i))
    total = sum(r["commands"] for r in reports)
    bad = sum(sum(r["violations"].values()) + r["invented"] for r in reports)
    print(f"\nDDS fuzz campaign (seed {args.seed}, {args.seconds:g} s per case):")
    for r in reports:
        print(f"  {r['case']}: {describe(r)}; sessions {r['sessions']}, acts {r['acts']}; torque gave way to the "
              f"rate limit {r['torque_best_effort']} times; node {'alive' if r['node_alive'] else 'DIED'}, exit "
              f"{r['exit_code']}, tracebacks {r['tracebacks']}, RuntimeWarnings {r['runtime_warnings']}")
    print(f"total: {total} commands checked, {bad} violations")
    if args.json:
        args.json.write_text(json.dumps({"seed": args.seed, "seconds": args.seconds, "cases": reports}, indent=1))
    died = any(not r["node_alive"] or r["exit_code"] != 0 or r["tracebacks"] for r in reports)
    return 1 if bad or died else 0


if __name__ == "__main__":
    sys.exit(main())
