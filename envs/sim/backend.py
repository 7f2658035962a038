"""The interface a batched simulation backend gives `MujocoTaskEnv`.

Two backends implement it:

- ``"mujoco"`` (`mujoco_backend.MujocoBatchSim`): the MuJoCo C engine, worlds stepped
  by `mujoco.rollout` C threads, state in float64 numpy arrays on the host; the torch
  views are rebuilt (one host copy) after each step.
- ``"warp"`` (`warp_backend.WarpBatchSim`): MuJoCo Warp on a CUDA GPU (or, slowly, the
  Warp CPU device); state lives in float32 Warp arrays and the torch tensors *are* those
  arrays (``wp.to_torch``, no copy), so a step has no host round-trip.

The env only talks to a backend through this protocol, so tasks read ``qpos``,
``qvel`` and ``sensordata`` as ``(N, k)`` torch tensors whatever the backend.

Sensor semantics (both backends): sensors are evaluated inside the physics step,
before integration, so after `step` they are one physics substep older than ``qpos``
and ``qvel`` (like a real sensor with a small latency); after `reset_worlds` they are
recomputed at the reset state of the reset worlds only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import mujoco
import numpy as np
import torch

# Per-world model fields behind each domain-randomization parameter. The MuJoCo C
# backend writes them into per-world MjModel copies; the Warp backend gives exactly
# these fields a world dimension (and no others, so unrandomized fields stay shared).
RANDOMIZED_FIELDS: dict[str, tuple[str, ...]] = {
    "friction": ("geom_friction",),
    "mass_scale": ("body_mass", "body_inertia"),
    "added_mass": ("body_mass", "body_inertia"),
    "com_offset": ("body_ipos",),
    "kp_scale": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
    "kd_scale": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
    "motor_strength": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
    "joint_damping_scale": ("dof_damping",),
    "armature_scale": ("dof_armature",),
    "gravity_tilt": ("gravity",),
}


@runtime_checkable
class BatchSim(Protocol):
    """What `MujocoTaskEnv` needs from a simulation backend."""

    backend: str  # "mujoco" | "warp"
    model: mujoco.MjModel  # the nominal host model (names, sizes, nominal parameters)
    num_envs: int
    decimation: int
    # Domain-randomization parameters this backend can apply (see envs/randomization.py).
    randomizable: frozenset[str]

    def torch_state(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(qpos (N, nq), qvel (N, nv), sensordata (N, nsensordata))`` as float32 tensors."""
        ...

    def reset_worlds(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Set the state of `env_ids` (time 0) and recompute their sensors at that state."""
        ...

    def step(self, ctrl: torch.Tensor | np.ndarray) -> None:
        """Advance every world by `decimation` physics steps holding `ctrl` ``(N, nu)``."""
        ...

    def add_to_qvel(self, dofs: slice, delta: torch.Tensor) -> None:
        """Add `delta` ``(N, len(dofs))`` to the velocities of `dofs` in every world (pushes)."""
        ...

    def ensure_per_world_fields(self, fields: set[str]) -> None:
        """Give the model `fields` a world dimension so each world can hold its own values."""
        ...

    @property
    def per_world(self) -> bool:
        """True when some model field differs between worlds (rendering keys models by world)."""
        ...

    def model_of(self, env_id: int) -> mujoco.MjModel:
        """An MjModel with world `env_id`'s (randomized) parameters."""
        ...

    def data_for(self, env_id: int, data: mujoco.MjData | None = None) -> mujoco.MjData:
        """An MjData with world `env_id`'s state, forward-computed (rendering, inspection)."""
        ...

    def get_state(self) -> np.ndarray:
        """Host copy of every world's state, ``(N, nstate)`` in MuJoCo's FULLPHYSICS layout."""
        ...

    def set_full_state(self, state: np.ndarray, sensordata: np.ndarray | None = None) -> None:
        """Inverse of `get_state` (checkpoint restore)."""
        ...

    def describe(self) -> dict:
        """Backend facts worth printing (device, buffer sizes, graph capture status...)."""
        ...

    def close(self) -> None:
        ...


BACKENDS = ("mujoco", "warp")
