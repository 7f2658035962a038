"""`roboreal launch FILE [name:=value ...]`: the command, its flags and its handler.

Nothing here imports rclpy: the launched nodes are separate processes.
"""

from __future__ import annotations

import argparse
import os
import sys

from roboreal.sim2real.launching.evaluator import declared_args, parse_launch_args, plan_launch, resolve_launch_file
from roboreal.sim2real.launching.plan import LaunchError
from roboreal.sim2real.launching.supervisor import run_plan


def launch_main(file: str, launch_args: list[str], dry_run: bool = False, show_args: bool = False,
                sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0) -> int:
    """Print the arguments (`show_args`), print the plan (`dry_run`) or run it; 2 on a launch-file error."""
    try:
        path, launch_args = resolve_launch_file(file, launch_args)
        if show_args:
            args = declared_args(path, parse_launch_args(launch_args))
            print("Arguments (pass arguments as '<name>:=<value>'):" if args else "No arguments.")
            for a in args:
                default = f"(default: '{a.default}')" if a.default is not None else "(required)"
                print(f"\n    '{a.name}':\n        {a.description or 'no description given'}\n        {default}")
            return 0
        plan = plan_launch(path, launch_args)
    except LaunchError as e:
        print(f"roboreal launch: error: {e}", file=sys.stderr)
        return 2
    if dry_run:
        print(plan.describe())
        return 0
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return run_plan(plan, sigterm_timeout, sigkill_timeout)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch", help="run a ROS 2 launch file (XML format) without ros2 launch",
        description="Runs a ROS 2 XML launch file: each node its own process (pkg=\"roboreal\" exec=CMD runs "
                    "`python -m roboreal CMD --ros-args ...`). Ctrl-C stops every process (SIGINT, then SIGTERM, "
                    "then SIGKILL). FILE is a path, a file in roboreal's launch/ folder, or `roboreal FILE`.")
    p.add_argument("file")
    p.add_argument("launch_args", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--dry-run", action="store_true", help="print the commands it would run, start nothing")
    p.add_argument("-s", "--show-args", action="store_true", help="list the launch file's arguments")
    p.add_argument("--sigterm-timeout", type=float, default=5.0, help="s after SIGINT before SIGTERM (default 5)")
    p.add_argument("--sigkill-timeout", type=float, default=5.0, help="s after SIGTERM before SIGKILL (default 5)")
    p.set_defaults(handler=cmd_launch)


def cmd_launch(args: argparse.Namespace) -> int:
    return launch_main(args.file, args.launch_args, dry_run=args.dry_run, show_args=args.show_args,
                       sigterm_timeout=args.sigterm_timeout, sigkill_timeout=args.sigkill_timeout)
