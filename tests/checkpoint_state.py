"""Comparing checkpoints entry by entry (exact-resume tests of every algorithm)."""

from __future__ import annotations

from pathlib import Path

import torch


def flatten_state(obj, prefix=""):
    """{dotted path: tensor or number} of a nested checkpoint entry."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_state(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_state(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def assert_same_state(a: dict, b: dict) -> None:
    fa, fb = flatten_state(a), flatten_state(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def load_ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)
