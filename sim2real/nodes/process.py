"""One ROS node per process, stopped by SIGINT/SIGTERM without losing its last words; and
`BackgroundNode`, a node spinning in a thread of a program that does something else."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import Iterator


@contextlib.contextmanager
def ros_until_signal(program: str, ros_args: list[str]) -> Iterator[threading.Event]:
    """rclpy initialized with `ros_args` and our own SIGINT/SIGTERM handling.

    A signal sets the yielded event instead of shutting the context down, so the node can
    still publish on its way out (the policy node's safe command, the recorder's last
    episode). On exit the previous handlers are restored and rclpy is shut down; destroy
    the node inside the block.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=[program, "--ros-args", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        rclpy.try_shutdown()


class BackgroundNode:
    """An rclpy node with its own context (DDS domain `domain`, default: $ROS_DOMAIN_ID)
    spinning in a daemon thread, for tools and tests that talk to nodes in other processes.
    Subscription callbacks run on that thread. `close()` stops and destroys it."""

    def __init__(self, name: str, domain: int | None = None, period: float = 0.01):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, **({} if domain is None else {"domain_id": domain}))
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=self._period)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def stop_process(p: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT (a node's clean shutdown), then SIGKILL after `timeout` s; the exit code."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return p.returncode
