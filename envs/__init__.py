"""Batched, domain-randomized simulation environments (see `roboreal.envs.core` for the contract)."""

from roboreal.envs.core import BatchedEnv, EnvSpec
from roboreal.envs.registry import make, task_config, task_names

__all__ = ["BatchedEnv", "EnvSpec", "make", "task_config", "task_names"]
