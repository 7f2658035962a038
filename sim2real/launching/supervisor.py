"""Supervising a `LaunchPlan`'s processes: start (at their timer's delay), output, deaths,
respawns and shutdown.

Each output line is prefixed with the process name. A process that dies is reported
(name and exit code) and the others keep running, as with `ros2 launch`, unless it has
`on_exit="shutdown"`. On Ctrl-C (SIGINT) or SIGTERM everything shuts down: SIGINT to every
process, SIGTERM to those still running after `sigterm_timeout`, SIGKILL after a further
`sigkill_timeout`; another Ctrl-C skips the wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from roboreal.sim2real.launching.plan import LaunchPlan, ProcessPlan


def _set_pdeathsig() -> None:  # runs in the child before exec (Linux): die with the runner
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    def __init__(self, plan: ProcessPlan):
        self.plan = plan
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.start_at = plan.delay
        self.done = False  # exited and not to be restarted


class LaunchRunner:
    """Starts a `LaunchPlan`'s processes and supervises them until shutdown."""

    def __init__(self, plan: LaunchPlan, sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0,
                 out: IO[str] | None = None, poll_interval: float = 0.02):
        self.plan = plan
        self.sigterm_timeout = sigterm_timeout
        self.sigkill_timeout = sigkill_timeout
        self.out = out or sys.stdout
        self.poll = poll_interval
        self.children = [_Child(p) for p in plan.processes]
        self.write_lock = threading.Lock()
        self.shutdown_reason: str | None = None
        self.failed = False
        self._escalate = False
        self.env = dict(os.environ)
        self.env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.env.setdefault("PYTHONUNBUFFERED", "1")

    # ----- output -----
    def log(self, level: str, msg: str) -> None:
        self.write(f"[{level}] [launch]: {msg}\n")

    def write(self, text: str) -> None:
        with self.write_lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):
                pass  # our stdout is gone (e.g. a closed pipe): keep supervising regardless

    def _pump(self, child: _Child, stream: IO[bytes]) -> None:
        name = child.plan.name
        for raw in iter(stream.readline, b""):
            self.write(f"[{name}] {raw.decode(errors='replace').rstrip()}\n")  # keeps draining: never blocks it
        stream.close()

    # ----- processes -----
    def _start(self, child: _Child) -> None:
        p = child.plan
        env = dict(self.env)
        for k, v in p.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        try:
            child.proc = subprocess.Popen(
                p.cmd[0] if p.shell else p.cmd, shell=p.shell, cwd=p.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0, preexec_fn=_set_pdeathsig)
        except OSError as e:
            self.log("ERROR", f"process '{p.name}' failed to start: {e} [cmd '{p.command_line}']")
            child.done = True
            self.failed = True
            return
        self.log("INFO", f"process started with pid [{child.proc.pid}]: {p.name}")
        child.reader = threading.Thread(target=self._pump, args=(child, child.proc.stdout), daemon=True)
        child.reader.start()

    def _signal(self, child: _Child, sig: signal.Signals) -> None:
        if child.proc is None or child.proc.poll() is not None:
            return
        self.log("INFO", f"sending signal '{sig.name}' to process '{child.plan.name}'")
        try:
            os.killpg(child.proc.pid, sig)  # the child's own process group: shells and wrappers too
        except (ProcessLookupError, PermissionError):
            try:
                child.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.shutdown_reason is None:
            self.shutdown_reason = f"{name} received"
        else:
            self._escalate = True  # Ctrl-C while shutting down: stop waiting, escalate to the next signal

    def _reap(self, now: float, t0: float) -> None:
        for c in self.children:
            if c.proc is None or c.done or c.proc.poll() is None:
                continue
            code = c.proc.returncode
            if c.reader is not None:
                c.reader.join(timeout=1.0)
            p = c.plan
            if self.shutdown_reason is not None:
                self.log("INFO", f"process '{p.name}' has finished [pid {c.proc.pid}, {_describe_exit(code)}]")
                c.done = True
                continue
            if code == 0:
                self.log("INFO", f"process '{p.name}' has finished cleanly [pid {c.proc.pid}]")
            else:
                self.failed = True
                self.log("ERROR", f"process '{p.name}' has died [pid {c.proc.pid}, {_describe_exit(code)}, "
                                  f"cmd '{p.command_line}']")
            if p.on_exit_shutdown:
                self.shutdown_reason = f"process '{p.name}' exited ({_describe_exit(code)}) and has on_exit=shutdown"
                c.done = True
            elif p.respawn:
                self.log("INFO", f"respawning '{p.name}' in {p.respawn_delay:g} s")
                c.proc = None
                c.start_at = now - t0 + p.respawn_delay
            else:
                c.done = True

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _run(self) -> int:
        for m in self.plan.messages:
            self.log("INFO", m)
        t0 = time.monotonic()
        shutdown_at = sorted(self.plan.shutdowns)
        while self.shutdown_reason is None:
            now = time.monotonic()
            for c in self.children:
                if c.proc is None and not c.done and now - t0 >= c.start_at:
                    self._start(c)
            if shutdown_at and now - t0 >= shutdown_at[0][0]:
                self.shutdown_reason = shutdown_at[0][1]
                break
            self._reap(now, t0)
            if all(c.done for c in self.children) and not shutdown_at:
                self.log("INFO", "all processes have finished")
                return 1 if self.failed else 0
            time.sleep(self.poll)
        self._reap(time.monotonic(), t0)
        self._shutdown()
        return 1 if self.failed else 0

    def _shutdown(self) -> None:
        self.log("INFO", f"shutting down ({self.shutdown_reason})")
        running = lambda: [c for c in self.children if c.proc is not None and c.proc.poll() is None]  # noqa: E731
        for c in self.children:
            if c.proc is None:
                c.done = True  # never started (timer) or waiting to respawn
        for sig, timeout in ((signal.SIGINT, self.sigterm_timeout), (signal.SIGTERM, self.sigkill_timeout),
                             (signal.SIGKILL, 5.0)):
            alive = running()
            if not alive:
                break
            if sig != signal.SIGINT:
                self.log("WARNING", f"{', '.join(repr(c.plan.name) for c in alive)} still running: escalating to "
                                    f"{sig.name}")
            for c in alive:
                self._signal(c, sig)
            self._escalate = False
            deadline = time.monotonic() + timeout
            while running() and time.monotonic() < deadline and not self._escalate:
                time.sleep(self.poll)
        self._reap(time.monotonic(), 0.0)
        for c in self.children:
            if c.reader is not None:
                c.reader.join(timeout=1.0)


def run_plan(plan: LaunchPlan, sigterm_timeout: float = 5.0, sigkill_timeout: float = 5.0,
             out: IO[str] | None = None) -> int:
    return LaunchRunner(plan, sigterm_timeout, sigkill_timeout, out).run()
