"""The algorithm registry: the one place that says which algorithms `roboreal train` knows
and how a checkpoint's policy becomes a deterministic module.

An **algorithm** is registered with its name, its `Algorithm` subclass and config dataclass
(``"module:Name"`` strings, imported on first use, so importing this registry stays cheap)
and the policy kinds its ``policy_state()`` writes. The runner, ``roboreal train --algo``
and the presets (``agents/configs/<name>.yaml``, optional) all read it.

A **policy kind** says how `roboreal.agents.policy.build_policy` rebuilds a checkpoint's
``policy`` entry for ``roboreal play`` and ``roboreal export``: the actor class (called as
``actor(obs_size, action_size, *[args[name] for name in arg_names])``, weights loaded from
the checkpoint) and the head that turns its output into an action (``clamp``: continuous
in [-1, 1]; ``argmax``: discrete indices).

Adding an algorithm = its file (an `Algorithm` subclass and a config dataclass) plus one
`register_algorithm` call (and `register_policy_kind` if its actor is a new kind); see
agents/README.md, "Adding an algorithm".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from roboreal.config import ConfigError

Head = Literal["clamp", "argmax"]


def _resolve(ref: str | type) -> type:
    """A class given as itself or as ``"package.module:Name"`` (imported now)."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class PolicyKind:
    name: str
    actor: str | type  # nn.Module class (or "module:Class"): actor(obs_size, action_size, *args)
    arg_names: tuple[str, ...]  # keys of the policy state's ``args`` passed to the actor, in order
    head: Head

    def actor_class(self) -> type:
        return _resolve(self.actor)


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    algorithm: str | type  # Algorithm subclass (or "module:Class")
    config: str | type  # its config dataclass (or "module:Class")
    policy_kinds: tuple[str, ...]  # the kinds its policy_state() writes (registered policy kinds)

    def classes(self) -> tuple[type, type]:
        """(algorithm class, config dataclass), imported on first use."""
        return _resolve(self.algorithm), _resolve(self.config)


_POLICY_KINDS: dict[str, PolicyKind] = {}
_ALGORITHMS: dict[str, AlgorithmSpec] = {}


def register_policy_kind(name: str, actor: str | type, arg_names: tuple[str, ...] | list[str],
                         head: Head = "clamp") -> PolicyKind:
    """Teach `build_policy` a new kind of checkpoint policy."""
    if head not in ("clamp", "argmax"):
        raise ValueError(f"policy kind {name!r}: head must be 'clamp' or 'argmax', got {head!r}")
    if name in _POLICY_KINDS:
        raise ValueError(f"policy kind {name!r} is registered already")
    kind = PolicyKind(name, actor, tuple(arg_names), head)
    _POLICY_KINDS[name] = kind
    return kind


def register_algorithm(name: str, algorithm: str | type, config: str | type,
                       policy_kinds: tuple[str, ...] | list[str] | str) -> AlgorithmSpec:
    """Make `name` trainable (``roboreal train --algo name``, `resolve_config`, the runner)
    and its checkpoints playable and exportable."""
    kinds = (policy_kinds,) if isinstance(policy_kinds, str) else tuple(policy_kinds)
    unknown = [k for k in kinds if k not in _POLICY_KINDS]
    if unknown:  # its checkpoints could be trained but never played or exported
        raise ValueError(f"algorithm {name!r}: unregistered policy kind {unknown[0]!r} "
                         f"(registered: {', '.join(_POLICY_KINDS)}); register_policy_kind it first")
    if name in _ALGORITHMS:
        raise ValueError(f"algorithm {name!r} is registered already")
    spec = AlgorithmSpec(name, algorithm, config, kinds)
    _ALGORITHMS[name] = spec
    return spec


def unregister_algorithm(name: str) -> None:
    """Forget an algorithm (tests register throw-away ones)."""
    _ALGORITHMS.pop(name, None)


def unregister_policy_kind(name: str) -> None:
    _POLICY_KINDS.pop(name, None)


def algorithm_names() -> tuple[str, ...]:
    """Registered algorithm names, in registration order (``--algo`` choices)."""
    return tuple(_ALGORITHMS)


def algorithm_spec(name: str) -> AlgorithmSpec:
    if name not in _ALGORITHMS:
        raise ConfigError("algo", f"unknown algorithm {name!r} (available: {', '.join(_ALGORITHMS)})")
    return _ALGORITHMS[name]


def algorithm_classes(name: str) -> tuple[type, type]:
    """(algorithm class, its config dataclass) of a registered algorithm."""
    return algorithm_spec(name).classes()


def policy_kind(name: str) -> PolicyKind:
    if name not in _POLICY_KINDS:
        raise ValueError(f"unknown policy kind {name!r} (registered: {', '.join(_POLICY_KINDS)})")
    return _POLICY_KINDS[name]


# ----- built-ins -----
_NETWORKS = "roboreal.agents.networks"
register_policy_kind("gaussian", f"{_NETWORKS}:GaussianActor", ("hidden", "activation"))  # PPO, BC: mean, clipped
register_policy_kind("tanh_gaussian", f"{_NETWORKS}:TanhGaussianActor", ("hidden", "activation"))  # SAC, IQL
# CrossQ: BatchRenorm running statistics are in the state dict; eval mode makes them fixed affine maps
register_policy_kind("tanh_gaussian_brn", f"{_NETWORKS}:BRNTanhGaussianActor", ("hidden", "activation", "norm"))
register_policy_kind("q_argmax", f"{_NETWORKS}:QNetwork", ("hidden", "activation"), head="argmax")  # DQN: greedy
# BC / DAgger from pixels: conv encoders per camera + the vector group (agents/vision.py)
register_policy_kind("gaussian_image", "roboreal.agents.vision:ImageGaussianActor",
                     ("hidden", "activation", "image_shapes", "encoder"))

register_algorithm("ppo", "roboreal.agents.ppo:PPO", "roboreal.agents.ppo:PPOConfig", "gaussian")
register_algorithm("sac", "roboreal.agents.sac:SAC", "roboreal.agents.sac:SACConfig", "tanh_gaussian")
register_algorithm("crossq", "roboreal.agents.crossq:CrossQ", "roboreal.agents.crossq:CrossQConfig",
                   ("tanh_gaussian_brn", "tanh_gaussian"))
register_algorithm("dqn", "roboreal.agents.dqn:DQN", "roboreal.agents.dqn:DQNConfig", "q_argmax")
