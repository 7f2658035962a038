"""Sim-to-real: bundle export, the safety chain, sim2sim and the ROS 2 nodes.

The common entry points are importable from here (loaded on first use, so importing the
ROS-free safety package does not pull in torch):

    from roboreal.sim2real import load_bundle, export_bundle, run_sim2sim
"""

from __future__ import annotations

_EXPORTS = {
    "load_bundle": "roboreal.policy_bundle", "export_bundle": "roboreal.sim2real.bundle",
    "BundlePolicy": "roboreal.policy_bundle", "BundleError": "roboreal.policy_bundle",
    "run_sim2sim": "roboreal.sim2real.sim2sim",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'roboreal.sim2real' has no attribute {name!r}")
