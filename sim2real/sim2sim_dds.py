"""sim2sim over DDS: the sim bridge and the policy node as separate processes, in real time.

`roboreal sim2sim BUNDLE --over-dds` runs what `roboreal launch sim_deploy.launch.xml`
runs — `roboreal sim-bridge` (MuJoCo as the robot: robot.yaml's gains, the randomization
preset, sensor and command latency, sensor noise) and `roboreal deploy` (the bundle
behind its safety chain) — and scores the robot from the simulator's ground truth.
Each episode gets fresh processes (so a new randomization draw, seeded), and starts
once the policy node has finished its startup ramp and fade-in. The task env is used
only to sample what the task would (velocity commands, goals) from the same seeds. Any
robot: the processes get the robot by the reference the manifest records (``robot.source``:
a name or a robot.yaml path), or by `robot=` / ``--robot REF``.

What differs from the in-process path (`sim2sim.evaluate_deployment`): wall-clock
timing and DDS delivery are real; the bridge publishes at its own rate and applies one
randomization draw per process; message drops are not simulated. A bundle that sees cameras
gets them from the bridge (``--bundle``: rendered at its control rate, rgb8 Image messages),
under ``heavy`` with the bridge's camera randomization (the training ranges x1.5, one draw per
process, as the physics).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from roboreal.control.observation import projected_gravity
from roboreal.policy_bundle import load_bundle, load_manifest_robot
from roboreal.sim2real.nodes.process import stop_process

TOPIC_WAIT_S = 90.0  # process start-up + startup ramp, on a loaded 2-core machine


class GroundTruthProbe:
    """An rclpy node: sends commands/goals, reads the ground truth and the policy node's mode."""

    def __init__(self, spec, domain: int):
        from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
        from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
        from std_msgs.msg import String

        from roboreal.sim2real.nodes.process import BackgroundNode

        self.background = BackgroundNode("sim2sim_scorer", domain, period=0.05)
        self.node = n = self.background.node
        self.Twist, self.PoseStamped = Twist, PoseStamped
        self.mode: str | None = None
        self.base_pose = self.base_twist = self.ee = None
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(String, "/policy_node/mode", lambda m: setattr(self, "mode", m.data), latched)
        n.create_subscription(TwistStamped, "/sim_bridge/base_twist", self._on_twist, qos_profile_sensor_data)
        n.create_subscription(PoseStamped, "/sim_bridge/base_pose", self._on_pose, qos_profile_sensor_data)
        n.create_subscription(PoseStamped, "/sim_bridge/ee_pose", self._on_ee, qos_profile_sensor_data)
        self.cmd_pub = n.create_publisher(Twist, spec.ros.cmd_vel, 10) if spec.ros.cmd_vel else None
        self.goal_pub = n.create_publisher(PoseStamped, spec.ros.goal, 10) if spec.ros.goal else None

    def _on_twist(self, m) -> None:
        t = m.twist
        self.base_twist = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])

    def _on_pose(self, m) -> None:
        p, o = m.pose.position, m.pose.orientation
        self.base_pose = np.array([p.x, p.y, p.z, o.w, o.x, o.y, o.z])

    def _on_ee(self, m) -> None:
        p = m.pose.position
        self.ee = np.array([p.x, p.y, p.z])

    def send(self, command: np.ndarray | None = None, goal: np.ndarray | None = None) -> None:
        if self.cmd_pub is not None and command is not None:
            msg = self.Twist()
            msg.linear.x, msg.linear.y, msg.angular.z = (float(v) for v in command)
            self.cmd_pub.publish(msg)
        if self.goal_pub is not None and goal is not None:
            msg = self.PoseStamped()
            msg.header.frame_id = "world"
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
            msg.pose.orientation.w = 1.0
            self.goal_pub.publish(msg)

    def close(self) -> None:
        self.background.close()


def fallen(pose: np.ndarray, tilt_limit: float) -> bool:
    """The trunk below 0.12 m or its roll/pitch beyond the limit, as the task's tilt termination
    tests it (gravity seen from the base). `pose`: x y z qw qx qy qz (the sim bridge's ground truth)."""
    if pose[2] < 0.12:
        return True
    return float(projected_gravity(pose[3:7])[2]) > -math.cos(tilt_limit)


def bridge_parameters(randomization: str | None = None, driver=None) -> dict:
    """The sim bridge's parameters for a sim2sim condition: the physics `randomization`
    preset (or YAML file) once at startup, and the `driver`'s (`simulated_driver.DriverCfg`) mean
    latencies and its noise (a uniform half-width h as the bridge's Gaussian of the same
    standard deviation, h / sqrt(3))."""
    params: dict = {}
    if randomization:
        params.update(randomize=True, randomization=str(randomization))
    if driver is not None:
        params["latency"] = 0.5 * sum(driver.sensor_latency_ms) / 1000.0
        params["command_latency"] = 0.5 * sum(driver.command_latency_ms) / 1000.0
        for key, param in (("joint_pos", "joint_position_noise"), ("joint_vel", "joint_velocity_noise"),
                           ("imu_gyro", "imu_noise"), ("imu_orientation", "imu_orientation_noise")):
            if driver.noise.get(key):
                params[param] = driver.noise[key] / math.sqrt(3)
    return params


def evaluate_over_dds(bundle_path: str | Path, episodes: int = 2, seed: int = 0, randomization: str | None = None,
                      driver=None, log_dir: str | Path | None = None, episode_s: float | None = None,
                      robot: str | None = None) -> dict:
    """Score `episodes` real-time episodes of the deployed bundle (module docstring). `robot`:
    where to find the bundle's robot (default: the manifest's ``robot.source``, else its name)."""
    import torch

    from roboreal.envs import make
    from roboreal.robots.spec import robot_reference
    from roboreal.sim2real.sim2sim import task_env_overrides

    probe = load_bundle(bundle_path)
    spec = load_manifest_robot(probe.manifest, robot)
    bundle = load_bundle(bundle_path, robot=spec)  # refused unless it matches the robot
    robot_ref = robot_reference(spec)  # what the processes load: its name, or its robot.yaml's absolute path
    m = bundle.manifest
    train = m["training"]
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = int(os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100)))
    log_dir = Path(log_dir or Path(bundle_path) / "sim2sim_dds_logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = make(train["task"], num_envs=episodes, seed=seed, **task_env_overrides(m, robot_ref))
    with torch.no_grad():
        env.reset()
        commands = [env.commands.clone().cpu().numpy()] if hasattr(env, "commands") else None
        if commands is not None:  # the task resamples mid-episode: the second draw, from the same stream
            env._resample_commands(torch.arange(episodes, device=env.device))
            commands.append(env.commands.clone().cpu().numpy())
        goals = env.goal.clone().cpu().numpy() if hasattr(env, "goal") else None
    dt = float(m["control"]["dt"])
    length_s = episode_s if episode_s is not None else env.spec.max_episode_steps * dt
    resample_s = getattr(env.cfg, "command_resample_s", math.inf)
    threshold = getattr(env.cfg, "distance_threshold", None)
    env.close()
    tilt_limit = spec.safety.tilt_limit
    fade = spec.safety.fade_in_time
    py = sys.executable
    proc_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    scorer = GroundTruthProbe(spec, domain)
    results = []
    try:
        for ep in range(episodes):
            bridge_args = [py, "-m", "roboreal", "sim-bridge", "--robot", robot_ref, "--seed", str(seed + ep)]
            if bundle.image_inputs:  # the cameras the policy sees (a task's fixed camera too), from its manifest
                bridge_args += ["--bundle", str(bundle_path)]
            params = bridge_parameters(randomization, driver)
            if params.pop("randomize", False):
                bridge_args.append("--randomize")
            ros = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
            bridge = subprocess.Popen(bridge_args + ["--ros-args"] + ros, env=proc_env,
                                      stdout=open(log_dir / f"bridge_{ep}.log", "w"), stderr=subprocess.STDOUT)
            node = subprocess.Popen([py, "-m", "roboreal", "deploy", str(bundle_path), "--robot", robot_ref],
                                    env=proc_env, stdout=open(log_dir / f"policy_node_{ep}.log", "w"),
                                    stderr=subprocess.STDOUT)
            try:
                results.append(_episode(scorer, ep, commands, goals, dt, length_s, resample_s, threshold, tilt_limit,
                                        fade, (bridge, node)))
            finally:
                stop_process(node)
                stop_process(bridge)
                scorer.mode = scorer.base_pose = scorer.base_twist = scorer.ee = None
    finally:
        scorer.close()
    out = {"episodes": episodes, "mean_length": float(np.mean([r["length"] for r in results])),
           "per_episode": results, "logs": str(log_dir)}
    errors = [r["tracking_error"] for r in results if "tracking_error" in r]
    if errors:
        out["velocity_tracking_error"] = float(np.mean(errors))
    if goals is not None:
        out["success_rate"] = float(np.mean([r["success"] for r in results]))
        out["final_distance"] = float(np.mean([r["final_distance"] for r in results]))
    return out


def _episode(scorer: GroundTruthProbe, ep: int, commands, goals, dt, length_s, resample_s, threshold, tilt_limit, fade,
             procs) -> dict:
    stand = np.zeros(3)
    goal = goals[ep] if goals is not None else None
    t0 = time.monotonic()
    # the command / goal stream starts at once: without it the policy node holds (its command watchdog)
    while scorer.mode != "policy" or (goal is None and scorer.base_twist is None) or (goal is not None and scorer.ee is None):
        scorer.send(stand, goal)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"episode {ep}: a process exited early (see the logs)")
        if time.monotonic() - t0 > TOPIC_WAIT_S:
            raise RuntimeError(f"episode {ep}: no policy mode after {TOPIC_WAIT_S} s (mode {scorer.mode!r})")
        time.sleep(0.05)
    settle = time.monotonic() + fade  # the fade-in: the policy is not fully in control yet
    while time.monotonic() < settle:
        scorer.send(stand, goal)
        time.sleep(0.05)
    start = time.monotonic()
    steps, err_sum, fell = 0, 0.0, False
    next_tick = start
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= length_s:
            break
        command = None
        if commands is not None:
            command = commands[0 if elapsed < resample_s else 1][ep]
        scorer.send(command, goal)
        if command is not None and scorer.base_twist is not None:
            err_sum += float(np.linalg.norm(command[:2] - scorer.base_twist[:2]))
        if scorer.base_pose is not None and tilt_limit is not None and fallen(scorer.base_pose, tilt_limit):
            fell = True
            steps += 1
            break
        steps += 1
        next_tick += dt
        time.sleep(max(0.0, next_tick - time.monotonic()))
    r = {"length": steps, "fell": fell, "mode_at_end": scorer.mode}
    if commands is not None:
        r["tracking_error"] = err_sum / max(1, steps)
    if goal is not None:
        d = float(np.linalg.norm(scorer.ee - goal))
        r["final_distance"], r["success"] = d, float(d <= threshold)
    return r
