"""One ROS node per process, stopped by SIGINT/SIGTERM without losing its last words."""

from __future__ import annotations

import contextlib
import signal
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
