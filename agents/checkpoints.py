"""Checkpoint files and the random state they carry.

Checkpoints are written with `torch.save` of tensors and plain containers only (they load
with ``torch.load(weights_only=True)``, see `load_checkpoint`), atomically (write + rename,
`atomic_save`), so a run killed while saving keeps its previous checkpoint. `rng_state`
captures every RNG a run draws from (torch, CUDA, numpy, python ``random``) in that form;
`set_rng_state` restores it, which is what makes a resumed run bit-identical.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roboreal.config import atomic_write

CHECKPOINT_FORMAT = "roboreal-checkpoint/1"


def rng_state() -> dict:
    """Every RNG's state as tensors and plain containers (savable with ``weights_only``)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    # random.setstate accepts only tuples; a state that went through list-making containers is turned back
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` atomically (`atomic_write`): a reader never sees half a checkpoint."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with the safe unpickler (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)
