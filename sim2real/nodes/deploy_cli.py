"""`roboreal deploy` (the policy node) and `roboreal teleop`.

rclpy is imported only inside the handlers, never here, so `roboreal --help` works on a
machine without ROS 2. Also runnable on its own: ``python -m roboreal.sim2real.nodes.deploy_cli deploy ...``.
"""

from __future__ import annotations

import argparse
import sys


def _ros_args_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", action="append", default=[], metavar="FILE.yaml",
                   help="ROS 2 params file (repeatable; later files win)")
    p.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], dest="ros_args",
                   help="standard ROS 2 arguments (-r from:=to, -p name:=value, --params-file F, --log-level L)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy", help="run a policy bundle on a robot over ROS 2 (observation -> policy -> safety chain -> commands)",
        description="The policy node: builds the bundle's observation from JointState/Imu/Twist/PoseStamped, runs "
                    "the policy at the manifest's control rate and publishes joint commands through the safety "
                    "chain. A bundle for another robot is refused (exit 1). Every option is a ROS parameter (see "
                    "roboreal/sim2real/nodes/policy_node.py and policy_params.py; defaults by robot kind in config/policy_node_<kind>.yaml); safety.* "
                    "parameters may only tighten robot.yaml's limits (exit 2 otherwise). E-stop: publish true on "
                    "/policy_node/estop; release: call /policy_node/reset (std_srvs/Trigger).")
    p.add_argument("bundle", nargs="?", help="bundle directory (or -p bundle:=PATH)")
    p.add_argument("--robot", help="the robot it runs on: a robot name, or a path to a robot.yaml or its folder "
                                   "(or -p robot:=REF)")
    p.add_argument("--runtime", choices=["onnx", "torchscript"])
    _ros_args_option(p)
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser(
        "teleop", help="joystick (sensor_msgs/Joy on /joy) or keyboard teleop: velocity commands / goals, "
                       "interventions",
        description="Maps /joy (or the keyboard with --keyboard, when stdin is a terminal) to velocity commands "
                    "(quadrupeds) or end-effector goal nudges (manipulators), toggles /intervention and, while "
                    "intervening, publishes the human's normalized action on /teleop/action; the policy node "
                    "executes it through its safety chain. Parameters: roboreal/sim2real/nodes/teleop.py; defaults by "
                    "robot kind in config/teleop_<kind>.yaml.")
    p.add_argument("--robot", help="a robot name, or a path to a robot.yaml or its folder (or -p robot:=REF)")
    p.add_argument("--bundle", help="the policy's bundle: action size and velocity ranges from its manifest")
    p.add_argument("--keyboard", action="store_true", help="read the keyboard (stdin must be a terminal)")
    p.add_argument("--action-size", type=int, help="size of the policy's action (default: actuated joints)")
    _ros_args_option(p)
    p.set_defaults(handler=cmd_teleop)


def _ros_args(args: argparse.Namespace, flags: dict) -> list[str]:
    out: list[str] = []
    for f in args.params:
        out += ["--params-file", f]
    out += list(args.ros_args)
    out.append("--ros-args")  # a new section, last, so that the flags win
    for name, value in flags.items():
        if value is not None:
            out += ["-p", f"{name}:={value}"]
    return out


def cmd_deploy(args: argparse.Namespace) -> int:
    import os
    import sys

    from roboreal.sim2real.nodes.policy_node import run  # imports rclpy

    rc = run(_ros_args(args, {"bundle": args.bundle, "robot": args.robot, "runtime": args.runtime}))
    # The safe command is out and rclpy is shut down: nothing is left to save, so skip the
    # interpreter's teardown of torch/onnxruntime (most of a second): exit within 2 s of Ctrl-C.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def cmd_teleop(args: argparse.Namespace) -> int:
    from roboreal.sim2real.nodes.teleop import run  # imports rclpy

    return run(_ros_args(args, {"robot": args.robot, "bundle": args.bundle,
                                "keyboard": "true" if args.keyboard else None, "action_size": args.action_size}))


def main(argv: list[str] | None = None) -> int:
    """The roboreal CLI (it imports only this module for deploy/teleop)."""
    from roboreal.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
