"""Test-wide settings: DDS stays on loopback, headless rendering, small thread counts."""

from __future__ import annotations

import os
import sys

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")

# shared test helpers (tests/*.py that are not test files) import by name
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402

# 2-core machines: one torch thread per process keeps the MuJoCo rollout threads fed.
torch.set_num_threads(1)


@pytest.fixture
def ros_domain_id(worker_id: str = "main") -> int:
    """A ROS_DOMAIN_ID unique to this test process (tests that start ROS nodes use it)."""
    return int(os.environ["ROS_DOMAIN_ID"])
