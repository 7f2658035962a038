"""The `roboreal` command line: one CLI, one subcommand per job.

Each area of the package contributes its subcommands through a module with an
`add_commands(subparsers)` function; a subcommand's handler gets the parsed args and
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from roboreal.config import ConfigError


class IntermixedParser(argparse.ArgumentParser):
    """Lets options and positionals mix (``TASK --algo sac key=value --seed 1 env.key=value``):
    a plain parser stops filling the ``overrides`` positional at the first option."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


# Modules that add subcommands. A module that fails to import because an optional
# extra is missing (e.g. rclpy for the ROS 2 nodes) leaves its commands out.
COMMAND_MODULES = [
    "roboreal.envs.cli",
    "roboreal.agents.cli",
    "roboreal.agents.imitation_cli",
    "roboreal.sim2real.cli",
    "roboreal.sim2real.nodes.cli",
    "roboreal.sim2real.nodes.deploy_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roboreal", description="Sim-to-real robot learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("roboreal"):
                continue  # that area has no CLI yet
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as e:
        print(f"roboreal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
