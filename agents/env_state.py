"""Save and restore the complete state of a batched env, for exact `--resume`.

`env_state_dict(env)` captures, as plain tensors/numbers (``weights_only``-safe):

- every tensor attribute of the env (episode counters, actions and action history,
  last actions, the episode tracker, per-term reward sums, and any task buffers such
  as goals or velocity commands) and every number attribute (``sim_time``, the next
  push time, ...);
- the env's torch generator (``env.generator``);
- the simulation state of every world (``env.sim.get_state()``, ``env.sim.get_sensordata()``,
  on either backend);
- the randomizer: its numpy generator (``env.randomizer.rng``), the sampled values and
  the next interval times; on restore the sampled model parameters are written back
  into the per-world models.

`load_env_state(env, state)` applies it to a freshly built env of the same task,
size and seed. An env may instead define its own ``state_dict()`` /
``load_state_dict()`` (e.g. a Gymnasium adapter); when it has neither and is not a
MuJoCo task env, `env_state_dict` returns ``None`` and the runner re-seeds the env on
resume (the resumed run is then not bit-identical; the runner says so).
"""

from __future__ import annotations

import numpy as np
import torch

_SKIP = {"qpos", "qvel", "sensordata"}  # views rebuilt from the simulation state by _refresh()


def _is_number(v) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, np.generic)


def env_state_dict(env) -> dict | None:
    if hasattr(env, "state_dict") and callable(env.state_dict):
        return {"custom": env.state_dict()}
    if not (hasattr(env, "sim") and hasattr(env, "generator") and hasattr(env.sim, "get_state")):
        return None
    tensors, numbers, tensor_dicts = {}, {}, {}
    for name, value in vars(env).items():
        if name in _SKIP:
            continue
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().clone()
        elif _is_number(value) or value is None:
            numbers[name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            tensor_dicts[name] = {k: v.detach().clone() for k, v in value.items()}
    state = {
        "tensors": tensors, "numbers": numbers, "tensor_dicts": tensor_dicts,
        "tracker": {"returns": env.tracker.returns.clone(), "lengths": env.tracker.lengths.clone()}
        if hasattr(env, "tracker") else None,
        "generator": env.generator.get_state(),
        "sim_state": torch.from_numpy(env.sim.get_state()),
        "sim_sensordata": torch.from_numpy(env.sim.get_sensordata()),
    }
    rnd = getattr(env, "randomizer", None)
    if rnd is not None:
        state["randomizer"] = {
            "rng": rnd.rng.bit_generator.state,
            "values": {k: v.clone() for k, v in rnd.values.items()},
            "next_interval": dict(rnd._next_interval),
        }
    return state


def load_env_state(env, state: dict) -> None:
    if "custom" in state:
        env.load_state_dict(state["custom"])
        return
    for name, value in state["tensors"].items():  # fresh, independent tensors (no aliasing carried over)
        setattr(env, name, value.clone().to(env.device))
    for name, value in state["numbers"].items():
        setattr(env, name, value)
    for name, value in state["tensor_dicts"].items():
        setattr(env, name, {k: v.to(env.device) for k, v in value.items()})
    if state.get("tracker") is not None:
        env.tracker.returns.copy_(state["tracker"]["returns"])
        env.tracker.lengths.copy_(state["tracker"]["lengths"])
    env.generator.set_state(state["generator"])
    env.sim.set_full_state(state["sim_state"].numpy(), state["sim_sensordata"].numpy())
    rnd = getattr(env, "randomizer", None)
    if rnd is not None and "randomizer" in state:
        rnd.rng.bit_generator.state = state["randomizer"]["rng"]
        for k, v in state["randomizer"]["values"].items():
            rnd.values[k].copy_(v)
        rnd._next_interval = dict(state["randomizer"]["next_interval"])
        if rnd.sim.per_world:
            rnd._apply(np.arange(env.num_envs))
    if hasattr(env, "_refresh"):
        env._refresh()
