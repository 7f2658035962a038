"""go1 walks over ROS 2: `roboreal launch sim_deploy.launch.xml` with a trained bundle.

The simulated robot (the sim bridge: MuJoCo with robot.yaml's gains, real time) and the
policy node (the bundle behind its safety chain) run as `roboreal launch` starts them for
a deployment. This script is the operator: it publishes `/cmd_vel` and reads the
simulator's ground truth (`/sim_bridge/base_pose`), the policy node's mode and its
`~/audit` stream (one message per command sent, with the bitmask of the safety filters
that changed it). After the startup ramp and fade-in it runs, in order:

    stand     zero command, 2 s
    forward   vx = 0.5 m/s, 5 s: distance travelled, heading change, lateral drift
    turn      yaw rate = 0.8 rad/s, 4 s: heading change
    stop      zero command, 2 s

and prints distance, heading, falls (trunk below 0.12 m or tilt past the safety limit)
and the chain's interventions per phase.

    python benchmarks/go1_walk_ros.py BUNDLE [--randomize] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHASES = (("stand", (0.0, 0.0, 0.0), 2.0), ("forward", (0.5, 0.0, 0.0), 5.0), ("turn", (0.0, 0.0, 0.8), 4.0),
          ("stop", (0.0, 0.0, 0.0), 2.0))
START_TIMEOUT_S = 120.0


def _yaw(q: np.ndarray) -> float:
    w, x, y, z = q
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def walk(bundle: Path, randomize: bool = False, seed: int = 0, log: Path | None = None) -> dict:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = int(os.environ.setdefault("ROS_DOMAIN_ID", str(120 + os.getpid() % 80)))
    from std_msgs.msg import Float64MultiArray, String

    from roboreal.robots.spec import robot_reference
    from roboreal.policy_bundle import load_bundle, load_manifest_robot
    from roboreal.sim2real.nodes.step_record import audit_from_msg, parse_info
    from roboreal.sim2real.sim2sim_dds import GroundTruthProbe, fallen
    from rclpy.qos import DurabilityPolicy, QoSProfile

    spec = load_manifest_robot(load_bundle(bundle).manifest)  # go1, or any quadruped the bundle was trained on
    probe = GroundTruthProbe(spec, domain)
    audit: list[dict] = []
    info: dict = {}
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.node.create_subscription(Float64MultiArray, "/policy_node/audit", lambda m: audit.append(audit_from_msg(m)),
                                   QoSProfile(depth=100))
    probe.node.create_subscription(String, "/policy_node/info", lambda m: info.update(parse_info(m.data)), latched)
    cmd = [sys.executable, "-m", "roboreal", "launch", "sim_deploy.launch.xml", f"bundle:={bundle.resolve()}",
           f"robot:={robot_reference(spec)}", f"randomize:={'true' if randomize else 'false'}", f"seed:={seed}"]
    out = open(log, "w") if log else subprocess.DEVNULL
    launch = subprocess.Popen(cmd, cwd=ROOT / "launch", start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    stand = np.zeros(3)
    try:
        t0 = time.monotonic()
        while probe.mode != "policy" or probe.base_pose is None:
            probe.send(stand)
            if launch.poll() is not None:
                raise RuntimeError(f"the launch exited with code {launch.returncode} (log: {log})")
            if time.monotonic() - t0 > START_TIMEOUT_S:
                raise RuntimeError(f"no policy mode after {START_TIMEOUT_S:.0f} s (mode {probe.mode!r})")
            time.sleep(0.05)
        settle = time.monotonic() + spec.safety.fade_in_time
        while time.monotonic() < settle:
            probe.send(stand)
            time.sleep(0.05)
        filters = info.get("audit_interventions", [])
        phases = []
        for name, command, seconds in PHASES:
            start_pose = probe.base_pose.copy()
            first_audit = len(audit)
            fell = False
            yaw0 = _yaw(start_pose[3:7])
            turned, last_yaw = 0.0, yaw0  # summed per sample: a turn past 180 degrees must not wrap
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                probe.send(np.array(command))
                pose = probe.base_pose
                if fallen(pose, spec.safety.tilt_limit):
                    fell = True
                yaw = _yaw(pose[3:7])
                turned += math.remainder(yaw - last_yaw, 2 * math.pi)
                last_yaw = yaw
                time.sleep(0.02)
            pose = probe.base_pose.copy()
            turned += math.remainder(_yaw(pose[3:7]) - last_yaw, 2 * math.pi)
            delta = pose[:2] - start_pose[:2]
            # the displacement in the heading the phase started with: forward and sideways
            forward = float(math.cos(yaw0) * delta[0] + math.sin(yaw0) * delta[1])
            lateral = float(-math.sin(yaw0) * delta[0] + math.cos(yaw0) * delta[1])
            heading = math.degrees(turned)
            steps = audit[first_audit:]
            counts: dict[str, int] = {}
            for a in steps:
                bits = int(a["interventions"])
                for i, f in enumerate(filters):
                    if bits & (1 << i):
                        counts[f] = counts.get(f, 0) + 1
            modes = sorted({int(a["mode"]) for a in steps})
            phases.append({"phase": name, "command": list(command), "seconds": seconds,
                           "distance_m": float(np.linalg.norm(delta)), "forward_m": forward, "lateral_m": lateral,
                           "heading_deg": heading, "fell": fell, "commands_sent": len(steps),
                           "commands_changed_by_chain": sum(1 for a in steps if int(a["interventions"])),
                           "interventions": counts, "modes": modes})
    finally:
        probe.close()
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGINT)
            try:
                launch.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
    return {"bundle": str(bundle), "robot": spec.name, "robot_ref": robot_reference(spec), "randomize": randomize,
            "seed": seed, "phases": phases}


def report(result: dict) -> None:
    print(f"{result['robot']} over ROS 2 (roboreal launch sim_deploy.launch.xml robot:={result['robot_ref']}, randomize "
          f"{'on' if result['randomize'] else 'off'}, seed {result['seed']}), bundle {result['bundle']}")
    print("| phase | command (vx, vy, yaw) | time | distance | forward | sideways | heading | fell | "
          "commands | changed by chain (by filter) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in result["phases"]:
        by = ", ".join(f"{k} {v}" for k, v in sorted(p["interventions"].items())) or "-"
        print(f"| {p['phase']} | {tuple(p['command'])} | {p['seconds']:.0f} s | {p['distance_m']:.2f} m | "
              f"{p['forward_m']:+.2f} m | {p['lateral_m']:+.2f} m | {p['heading_deg']:+.0f} deg | "
              f"{'yes' if p['fell'] else 'no'} | {p['commands_sent']} | {p['commands_changed_by_chain']} ({by}) |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--randomize", action="store_true", help="the sim bridge's randomization preset (mild)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path, default=None, help="the launch's output (default: BUNDLE/walk_ros.log)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = walk(args.bundle, args.randomize, args.seed, args.log or args.bundle / "walk_ros.log")
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    forward = next(p for p in result["phases"] if p["phase"] == "forward")
    turn = next(p for p in result["phases"] if p["phase"] == "turn")
    ok = forward["forward_m"] >= 2.0 and not any(p["fell"] for p in result["phases"]) and turn["heading_deg"] > 45
    print("goal (>= 2 m forward in 5 s at 0.5 m/s, turns on a yaw command, no fall):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
