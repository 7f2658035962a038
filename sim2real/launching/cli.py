"""`roboreal launch FILE [name:=value ...]`: the command's handler (its flags are declared
with the other ROS commands in `roboreal/sim2real/nodes/cli.py`).
"""

from __future__ import annotations

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
