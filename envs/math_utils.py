"""Batched quaternion helpers (MuJoCo convention: w, x, y, z)."""

from __future__ import annotations

import torch


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate world-frame vectors `v` (N, 3) into the frame of orientation `q` (N, 4)."""
    w = q[:, 0:1]
    xyz = q[:, 1:4]
    t = 2.0 * torch.cross(xyz, v, dim=-1)
    return v - w * t + torch.cross(xyz, t, dim=-1)


def projected_gravity(q: torch.Tensor) -> torch.Tensor:
    """Unit gravity direction seen in the body frame: (0, 0, -1) when upright."""
    g = torch.zeros(q.shape[0], 3, device=q.device, dtype=q.dtype)
    g[:, 2] = -1.0
    return quat_rotate_inverse(q, g)
