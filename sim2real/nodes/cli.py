"""`roboreal sim-bridge` (`roboreal launch` is `roboreal.sim2real.launching.cli`).

rclpy is imported only inside the handlers (never here), so `roboreal --help` works
on a machine without ROS 2.
"""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sim-bridge", help="run the MuJoCo simulation as the robot over ROS 2 (joint states, IMU, commands)",
        description="The simulated robot over ROS 2, speaking the topics of a real robot driver. Every option is "
                    "a ROS parameter (see roboreal/sim2real/nodes/sim_bridge.py); the flags below are shortcuts "
                    "that override params files and --ros-args. Standard ROS arguments go after --ros-args, "
                    "e.g. --ros-args -r __node:=bridge -p joint_position_noise:=0.01.")
    p.add_argument("--robot", help="a robot name, or a path to a robot.yaml or its folder; or -p robot:=REF")
    p.add_argument("--rate", type=float, help="publish_rate, Hz (default: the physics rate, 1 / physics_dt)")
    p.add_argument("--params", action="append", default=[], metavar="FILE.yaml",
                   help="ROS 2 params file (repeatable; later files win)")
    p.add_argument("--seed", type=int)
    p.add_argument("--randomize", action="store_true", default=None,
                   help="randomize the model once (-p randomization:=mild|heavy|FILE.yaml; default mild)")
    p.add_argument("--initial-pose", help="'default' (robot.yaml's default pose) or an MJCF keyframe name "
                                          "(default: home)")
    p.add_argument("--latency", type=float, help="s of delay on outgoing sensor messages")
    p.add_argument("--bundle", metavar="DIR", help="a policy bundle: publish the cameras its manifest's images list "
                                                   "(a task's fixed camera included), at its control rate")
    p.add_argument("--cameras", nargs="+", metavar="NAME", help="robot.yaml cameras to publish as well (e.g. wrist)")
    p.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], dest="ros_args",
                   help="standard ROS 2 arguments (-r from:=to, -p name:=value, --params-file F, --log-level L)")
    p.set_defaults(handler=cmd_sim_bridge)


def cmd_sim_bridge(args: argparse.Namespace) -> int:
    ros_args: list[str] = []
    for f in args.params:
        ros_args += ["--params-file", f]
    ros_args += list(args.ros_args)
    flags = {"robot": args.robot, "publish_rate": args.rate, "seed": args.seed, "initial_pose": args.initial_pose,
             "latency": args.latency, "randomize": "true" if args.randomize else None, "bundle": args.bundle,
             # a string array parameter in ROS 2's YAML list syntax (a name alone would be a string)
             "cameras": "[" + ",".join(args.cameras) + "]" if args.cameras else None}
    # A new --ros-args section (valid even after a `--`), last so the flags win.
    ros_args.append("--ros-args")
    for name, value in flags.items():
        if value is not None:
            ros_args += ["-p", f"{name}:={value}"]

    from roboreal.sim2real.nodes.sim_bridge import run  # imports rclpy

    return run(ros_args)
