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


# Modules that add subcommands, and the commands each adds. Only the module of the
# command being run is imported (a node starts in a fraction of a second instead of
# importing torch for every other command); `roboreal --help` imports them all.
COMMAND_MODULES = {
    "roboreal.envs.cli": ("tasks", "view"),
    "roboreal.envs.robot_cli": ("robot",),
    "roboreal.agents.cli": ("train", "play"),
    "roboreal.agents.imitation_cli": ("collect", "bc", "dagger"),
    "roboreal.data.cli": ("data",),
    "roboreal.agents.offline_cli": ("offline",),
    "roboreal.sim2real.cli": ("export", "sim2sim"),
    "roboreal.sim2real.nodes.cli": ("sim-bridge",),
    "roboreal.sim2real.launching.cli": ("launch",),
    "roboreal.sim2real.nodes.deploy_cli": ("deploy", "teleop"),
    "roboreal.sim2real.nodes.record_cli": ("record",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; with `command`, only the module that defines it is imported."""
    parser = argparse.ArgumentParser(prog="roboreal", description="Sim-to-real robot learning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [m for m, cmds in COMMAND_MODULES.items() if command in cmds] or list(COMMAND_MODULES)
    for name in modules:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
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
