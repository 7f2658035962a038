"""The main job (`./dev demo`): train -> export -> deploy over ROS 2 -> measure.

1. Train a `panda-reach` policy with PPO on the CPU (about a minute).
2. Export it as a bundle (ONNX + TorchScript + manifest) and check it in sim2sim.
3. Launch the simulated Panda (MuJoCo over ROS 2) and the policy node on the same
   topics a real robot's driver uses (`launch/sim_deploy.launch.xml`), on loopback only.
4. Send a few goal poses, measure how close the end-effector gets to each, and print the
   safety chain's report from the policy node's diagnostics.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

# Goals in the robot base frame, inside the training goal box (x 0.3..0.65, y +-0.3, z 0.15..0.55).
GOALS = [(0.45, 0.2, 0.35), (0.55, -0.15, 0.25), (0.35, -0.25, 0.45), (0.5, 0.1, 0.2)]


def train_and_export(run_dir: Path, steps: int, seed: int) -> Path:
    from roboreal.agents.runner import resolve_config, train
    from roboreal.sim2real.bundle import export_bundle

    print(f"\n== 1. training panda-reach with PPO for {steps:,} env steps (run: {run_dir})")
    stats = train(resolve_config("panda-reach", "ppo", seed=seed, total_steps=steps), run_dir, progress=True)
    print(f"   final training success rate {stats.get('train/success_rate', float('nan')):.2f}")
    print("\n== 2. exporting the bundle")
    bundle = export_bundle(run_dir)
    print(f"   {bundle}: {', '.join(sorted(p.name for p in bundle.iterdir()))}")
    from roboreal.sim2real.sim2sim import print_report, run_sim2sim

    print_report(run_sim2sim(bundle, "heavy", episodes=16, seed=seed))
    return bundle


class GoalClient:
    """Sends goal poses and watches the simulated end-effector and the policy node's diagnostics."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import qos_profile_sensor_data

        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("demo_goal_client")
        self.PoseStamped = PoseStamped
        self.goal_pub = self.node.create_publisher(PoseStamped, "/goal_pose", 10)
        self.ee = None
        self.diag: dict[str, str] = {}
        self.node.create_subscription(PoseStamped, "/sim_bridge/ee_pose", self._on_ee, qos_profile_sensor_data)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._stop = False
        self._spin.start()

    def _spin_forever(self) -> None:
        while not self._stop:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

    def _on_ee(self, msg) -> None:
        p = msg.pose.position
        self.ee = np.array([p.x, p.y, p.z])

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith("policy_node"):
                self.diag = {kv.key: kv.value for kv in st.values}

    def send_goal(self, xyz) -> None:
        msg = self.PoseStamped()
        msg.header.frame_id = "world"  # the robot base frame (the policy node accepts its goal_frame_ids)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, xyz)
        msg.pose.orientation.w = 1.0
        self.goal_pub.publish(msg)

    def close(self) -> None:
        self._stop = True
        self._spin.join(timeout=2)
        self.node.destroy_node()
        self.rclpy.shutdown()


def deploy_and_measure(bundle: Path, seconds_per_goal: float, startup_timeout: float = 60.0) -> int:
    print("\n== 3. launching the simulated robot + policy node over ROS 2 "
          f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')}, discovery {os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE')})")
    cmd = [sys.executable, "-m", "roboreal", "launch", "sim_deploy.launch.xml", f"bundle:={bundle}", "robot:=panda"]
    launch = subprocess.Popen(cmd, cwd=Path(__file__).parent / "launch", start_new_session=True)
    client = GoalClient()
    try:
        t0 = time.monotonic()
        # Goals stream from the start: without a fresh goal the policy node holds (command watchdog).
        while client.diag.get("mode") != "policy" or client.ee is None:  # after the startup ramp
            client.send_goal(GOALS[0])
            if launch.poll() is not None:
                print(f"   the launch exited early with code {launch.returncode}")
                return 1
            if time.monotonic() - t0 > startup_timeout:
                print(f"   timed out waiting for the policy node (mode {client.diag.get('mode')!r}, "
                      f"end-effector pose {'received' if client.ee is not None else 'not received'})")
                return 1
            time.sleep(0.2)
        print("\n== 4. driving the arm to goals")
        errors = []
        for goal in GOALS:
            client.send_goal(goal)
            end = time.monotonic() + seconds_per_goal
            while time.monotonic() < end:
                client.send_goal(goal)  # a goal stream, as a planner or teleop would send
                time.sleep(0.1)
            err = float(np.linalg.norm(client.ee - np.array(goal)))
            errors.append(err)
            print(f"   goal {goal}: end-effector {np.round(client.ee, 3).tolist()}  error {err * 100:.1f} cm  "
                  f"(mode {client.diag.get('mode')})")
        print(f"\n   mean error {np.mean(errors) * 100:.1f} cm; within 5 cm: {sum(e < 0.05 for e in errors)}/{len(errors)}")
        print("\n== safety chain report (policy node diagnostics)")
        for key, value in sorted(client.diag.items()):
            print(f"   {key:40s} {value}")
        return 0 if np.mean(errors) < 0.1 else 1
    finally:
        client.close()
        os.killpg(launch.pid, signal.SIGINT)
        try:
            launch.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # DDS stays on this host
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    parser = argparse.ArgumentParser(prog="roboreal-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="run and bundle folder")
    parser.add_argument("--steps", type=int, default=300_000, help="PPO env steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds-per-goal", type=float, default=4.0)
    parser.add_argument("--bundle", default=None, help="skip training: deploy this bundle")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    bundle = Path(args.bundle).resolve() if args.bundle else train_and_export(
        out / f"panda-reach-ppo-{time.strftime('%Y%m%d-%H%M%S')}", args.steps, args.seed)
    return deploy_and_measure(bundle, args.seconds_per_goal)


if __name__ == "__main__":
    raise SystemExit(main())
