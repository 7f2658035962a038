"""What the tests that run ROS nodes share: DDS domains kept on this host, node processes
that are always stopped, and a probe node that listens and talks to them.

Imported by name (``from ros_helpers import ...``): conftest.py puts this folder on sys.path,
which pytest's ``--import-mode=importlib`` does not do.

DDS never leaves loopback: every process gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and
a ROS_DOMAIN_ID derived from this pytest process's (conftest sets it). Each test file takes
its own offsets from that base (`domain_id`), so that processes a test leaves behind cannot
talk to the next file's:

    test_policy_node, test_safety_wire   the base itself
    test_ros_sim_bridge                  0, 50, 75, 100, 150
    test_recorder                        25, 75
    test_shutdown                        30..37
    test_any_robot_ros                   31, 37
    test_byo_robots                      140
    test_mcap_recording                  45
    test_demo                            125
    test_image_deployment                165, 166
    test_image_recording                 170
    test_reach_vision_deployment         172
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent


def domain_id(offset: int) -> int:
    """The ROS_DOMAIN_ID `offset` from this process's (conftest's) base, in 1..200."""
    return 1 + (int(os.environ["ROS_DOMAIN_ID"]) + offset) % 200


def ros_env(domain: int | None = None) -> dict[str, str]:
    """The environment of a node process: DDS on loopback, domain `domain` (default: this
    process's), unbuffered output (it is read while the node runs), one OpenMP thread (2 cores)."""
    return {**os.environ, "ROS_DOMAIN_ID": str(domain if domain is not None else os.environ["ROS_DOMAIN_ID"]),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def in_process_context(offset: int) -> Iterator[Any]:
    """An rclpy context on domain `domain_id(offset)` for nodes built in this process (their
    callbacks called directly or spun by the test); shut down on exit."""
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id(offset))
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


def wait_until(cond: Callable[[], Any], timeout: float, poll: float = 0.01) -> Any:
    """`cond()`, polled until it is truthy or `timeout` s have passed; its last value."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= end:
            return value
        time.sleep(poll)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, process: Process | None = None,
             each: Callable[[], Any] | None = None, poll: float = 0.01) -> Any:
    """`cond()`'s first truthy value; AssertionError naming `what` after `timeout` s, or as soon
    as `process` (whose output the error shows) has exited. `each` runs before every check."""
    end = time.monotonic() + timeout
    while True:
        if each is not None:
            each()
        value = cond()
        if value:
            return value
        if process is not None and process.proc.poll() is not None:
            value = cond()  # what it printed or sent on its way out
            if value:
                return value
            raise AssertionError(f"the process exited ({process.proc.returncode}) before {what}:\n{process.output}")
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                                 + (f"; output:\n{process.output}" if process is not None else ""))
        time.sleep(poll)


class Process:
    """`cmd` in a subprocess (cwd: the repository), stdout and stderr into `log` (default: an
    anonymous temporary file), read back by `output` while it runs; always stopped by the test.

    A file, not a pipe: a node writing its last words never blocks on a slow reader, and the
    processes a launch file starts write there too. `process_group`: the command and every
    process it starts get the signals (a launch)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path | None = None, stop_timeout: float = 10.0,
                 process_group: bool = False):
        self.log = log
        self._file = open(log, "w+b") if log is not None else tempfile.TemporaryFile()  # w+: read back
        self._final_output: str | None = None
        self.stop_timeout = stop_timeout
        self.process_group = process_group
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._file, stderr=subprocess.STDOUT,
                                     start_new_session=process_group)

    @property
    def output(self) -> str:
        """Everything the process (and its children) wrote so far."""
        if self._final_output is not None:
            return self._final_output
        fd = self._file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")  # pread: the child's offset stays

    def wait_output(self, text: str, timeout: float) -> None:
        """Wait until `text` is in the output; AssertionError after `timeout` s or if the process exits first."""
        wait_for(lambda: text in self.output, timeout, repr(text), self, poll=0.02)

    def send_signal(self, sig: int) -> None:
        """`sig` to the process, or to its whole group."""
        if self.process_group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float | None = None) -> int:
        """`sig` (a node's clean shutdown), SIGKILL after `timeout` s (default: `stop_timeout`);
        the exit status. The output stays readable."""
        if self.proc.poll() is None:
            self.send_signal(sig)
            try:
                self.proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._final_output is None:
            self._final_output = self.output
            self._file.close()
        return self.proc.returncode


class Received:
    """A subscription callback keeping each message with the time it arrived (`clock`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.msgs: list = []
        self.times: list[float] = []
        self._clock = clock
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.times.append(self._clock())
            self.msgs.append(msg)

    def since(self, t: float) -> list:
        """The messages that arrived at or after `t`."""
        with self._lock:
            return [m for when, m in zip(self.times, self.msgs) if when >= t]


class Probe:
    """A test node on its own rclpy context and DDS domain (default: this process's), spun by a
    thread: subscriptions (`listen`) fill while the test waits; `call` a service.

    `start=False`: the executor is made and spun only from `start()` on, once the node's timers
    and subscriptions exist. test_policy_node's fake robot needs that: its 100 Hz sensor timer,
    created on a node already added to an executor (as `process.BackgroundNode` does), published
    with stalls of up to 0.27 s, which tripped the policy node's 0.1 s watchdog."""

    def __init__(self, domain: int | None = None, name: str = "test_probe", start: bool = True):
        import rclpy

        self.context = rclpy.Context()
        rclpy.init(context=self.context, **({} if domain is None else {"domain_id": domain}))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Start spinning (a probe made with ``start=False``)."""
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.01)  # returns as soon as there is work

    def listen(self, msg_type: Any, topic: str, qos: Any = None, clock: Callable[[], float] = time.monotonic
               ) -> Received:
        """Subscribe to `topic` (default QoS: reliable, depth 100); the messages as they arrive."""
        from rclpy.qos import QoSProfile

        received = Received(clock)
        self.node.create_subscription(msg_type, topic, received, qos or QoSProfile(depth=100))
        return received

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 10.0) -> Any:
        """Call service `name`; its response (AssertionError if it is not there or does not answer in time)."""
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"no {name} service"
        future = client.call_async(request)
        wait_for(future.done, timeout, f"{name} to answer")
        return future.result()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def wait_first_message(received: Received, process: Process, what: str, timeout: float = 25.0) -> None:
    """Wait for the first message of `received`; an AssertionError with `process`'s output if none comes."""
    wait_until(lambda: received.msgs or process.proc.poll() is not None, timeout)
    assert received.msgs, f"no {what} within {timeout} s; output:\n{process.output}"
