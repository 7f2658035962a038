"""Control definitions shared by every layer: how a normalized action becomes a command.

`roboreal.control` sits beside `roboreal.robots` (it reads robot specs, nothing above),
so the simulated envs, the bundle exporter and the safety chain on the robot all import
the same code instead of each writing the formula again.
"""

from roboreal.control.action import ACTION_TYPES, ActionMapping, ActionType, GripperMapping

__all__ = ["ACTION_TYPES", "ActionMapping", "ActionType", "GripperMapping"]
