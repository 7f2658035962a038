"""How a policy's normalized action in [-1, 1] becomes a joint command.

The same mapping is used by the simulated env (in torch), written into a bundle's
manifest, and applied by the safety chain on the robot (in numpy), so training and
deployment cannot disagree about it.

- ``joint_position_absolute``: target = offset + scale * action   (offset = default pose)
- ``joint_position_delta``:    target = previous target + scale * action
- ``force``:                   force  = offset + scale * action  (torque/force control)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ActionType = Literal["joint_position_absolute", "joint_position_delta", "force"]


@dataclass(frozen=True)
class ActionMapping:
    type: ActionType
    joints: tuple[str, ...]  # which actuated joints the action drives, in order
    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.joints)
        if len(self.scale) != n or len(self.offset) != n:
            raise ValueError(f"action mapping: scale ({len(self.scale)}) and offset ({len(self.offset)}) "
                             f"must have one value per joint ({n})")

    @property
    def size(self) -> int:
        return len(self.joints)

    def to_command(self, action: np.ndarray, previous_target: np.ndarray | None = None) -> np.ndarray:
        """Map a (clipped) normalized action to joint targets or forces (numpy)."""
        scale = np.asarray(self.scale)
        if self.type == "joint_position_delta":
            if previous_target is None:
                raise ValueError("joint_position_delta needs the previous target")
            return previous_target + scale * action
        return np.asarray(self.offset) + scale * action

    def to_dict(self) -> dict:
        return {"type": self.type, "joints": list(self.joints), "scale": list(map(float, self.scale)),
                "offset": list(map(float, self.offset))}

    @classmethod
    def from_dict(cls, data: dict) -> "ActionMapping":
        return cls(type=data["type"], joints=tuple(data["joints"]), scale=tuple(data["scale"]),
                   offset=tuple(data["offset"]))
