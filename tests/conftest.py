"""Test-wide settings: DDS stays on loopback, headless rendering, small thread counts."""

from __future__ import annotations

import gc
import os
import re
import sys

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")

# shared test helpers (tests/*.py that are not test files: ros_helpers, checkpoint_state) import by
# name; --import-mode=importlib does not put this folder on sys.path
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402

# 2-core machines: one torch thread per process keeps the MuJoCo rollout threads fed.
torch.set_num_threads(1)

# torch's ~170k objects are never garbage: frozen, a full collection does not walk them. The
# walk stalled test_policy_node's fake robot (a ROS timer thread in this process) past the
# policy node's 0.1 s sensor watchdog (test_stale_frozen_future_and_unset_stamps_are_caught).
gc.collect()
gc.freeze()


# Test files that run nodes over DDS: their timers and watchdogs want a quiet machine, so
# `./dev test` runs them one at a time, before the rest runs on every core (pytest-xdist).
_DDS_SOURCE = re.compile(r"\b(rclpy|ros_helpers|sim2sim_dds)\b")


def pytest_collection_modifyitems(config, items) -> None:
    uses_dds: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        if path not in uses_dds:
            uses_dds[path] = bool(_DDS_SOURCE.search(item.path.read_text()))
        if uses_dds[path]:
            item.add_marker(pytest.mark.dds)
