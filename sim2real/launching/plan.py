"""What a launch file evaluates to: the processes to start, with their exact command lines.

The evaluator (`evaluator.py`) produces a `LaunchPlan`; the supervisor (`supervisor.py`)
runs one. Nothing here starts anything, so a plan can be checked or printed on its own.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # the roboreal package (= repository root)
LAUNCH_DIR = PACKAGE_DIR / "launch"


class LaunchError(Exception):
    """A launch file is invalid or cannot be run here; the message names the cause."""


@dataclass
class ProcessPlan:
    name: str  # unique display name ([name] prefix of its output)
    cmd: list[str]
    env: dict[str, str | None] = field(default_factory=dict)  # changes to the runner's env (None = unset)
    cwd: str | None = None
    shell: bool = False
    node_name: str | None = None
    namespace: str | None = None
    on_exit_shutdown: bool = False
    respawn: bool = False
    respawn_delay: float = 0.0
    delay: float = 0.0  # s after the launch starts (from <timer>)

    @property
    def command_line(self) -> str:
        return self.cmd[0] if self.shell else shlex.join(self.cmd)


@dataclass
class LaunchPlan:
    file: str
    args: dict[str, str]  # the launch arguments in effect (top-level file)
    processes: list[ProcessPlan] = field(default_factory=list)
    shutdowns: list[tuple[float, str]] = field(default_factory=list)  # (delay s, reason)
    messages: list[str] = field(default_factory=list)  # from <log>

    def describe(self) -> str:
        lines = [f"# {self.file}"]
        lines += [f"# arg {k}:={v}" for k, v in self.args.items()]
        for m in self.messages:
            lines.append(f"# log: {m}")
        for p in self.processes:
            extra = []
            if p.delay:
                extra.append(f"after {p.delay:g} s")
            if p.on_exit_shutdown:
                extra.append("on_exit=shutdown")
            if p.respawn:
                extra.append(f"respawn (delay {p.respawn_delay:g} s)")
            env = " ".join(f"{k}={shlex.quote(v)}" if v is not None else f"-u {k}" for k, v in p.env.items())
            lines.append(f"[{p.name}]{' (' + ', '.join(extra) + ')' if extra else ''} "
                         f"{'env ' + env + ' ' if env else ''}{p.command_line}")
        for delay, reason in self.shutdowns:
            lines.append(f"# shutdown after {delay:g} s: {reason}")
        return "\n".join(lines)


@dataclass
class DeclaredArg:
    name: str
    default: str | None
    description: str
    value: str | None = None  # the value in effect (None: in a branch a condition skipped)
