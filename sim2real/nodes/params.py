"""Default ROS parameters of the nodes: the params files in `config/` next to this module.

A node's defaults are the `ros__parameters` of `config/<node>_<robot>.yaml` (per-robot
nodes) or `config/<node>.yaml`; values passed at launch override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "config"


def config_file(node: str, robot: str | None = None) -> Path:
    """`config/<node>_<robot>.yaml` (robot: a name, or a robot.yaml path: its folder's name),
    or `config/<node>.yaml` without a robot."""
    if robot is None:
        return CONFIG_DIR / f"{node}.yaml"
    name = Path(robot).parent.name if robot.endswith((".yaml", ".yml")) else robot
    return CONFIG_DIR / f"{node}_{name}.yaml"


def default_parameters(node: str, robot: str | None = None) -> dict[str, Any]:
    """The `ros__parameters` of `config_file(node, robot)` ({} if there is none)."""
    path = config_file(node, robot)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    for entry in data.values():
        if isinstance(entry, dict) and "ros__parameters" in entry:
            return dict(entry["ros__parameters"] or {})
    return {}
