"""The policy-export hook: rebuild a trained deterministic actor as a plain `nn.Module`.

Every checkpoint (``best.pt``, ``last.pt``, periodic) holds a ``policy`` entry written by
the algorithm's ``policy_state()``. `build_policy` turns it into a `DeterministicPolicy`:

    module(obs[info["obs_group"]]) -> action

- input: the raw (un-normalized) observation group ``info["obs_group"]`` (``policy``),
  shape ``(B, info["obs_size"])``, float32; the running normalizer is inside the module;
- output: continuous tasks: ``(B, action_size)`` in [-1, 1] (PPO: the Gaussian mean,
  clipped; SAC: ``tanh`` of the mean; CrossQ: ``tanh`` of the mean, its BatchRenorm
  layers in eval mode, i.e. fixed affine maps of their running statistics); discrete
  tasks (DQN): ``(B,)`` int64 indices (greedy ``argmax Q``).

How each ``kind`` is rebuilt (actor class, constructor arguments, head) is registered in
`roboreal.agents.registry` (`register_policy_kind`).

A policy that sees camera images (BC / DAgger from pixels, kind ``gaussian_image``) is an
`ImagePolicy`, called as ``module(obs[info["obs_group"]], *[obs[c] for c in info["image_inputs"]])``:
the vector group as above plus one uint8 ``(B, C, H, W)`` image per camera of
``info["image_inputs"]`` (also ``module.image_inputs``), in that order; ``uint8 -> / 255``
happens inside. `policy_action(module, obs, obs_group)` makes that call from an env's
observation dict for either kind; `evaluate` and ``roboreal play`` use it.

The module holds no Python-side state, so ``torch.jit.trace``/``torch.onnx.export``
work on it (the bundle exporter of `roboreal.sim2real` builds on this).

    module, info = load_policy("runs/cartpole")   # best.pt if present, else last.pt
    print(describe_checkpoint(info))              # which file, its step, its evaluated figures

A training run's ``best.pt`` is its best *evaluated* policy (deterministic episodes on
separate eval envs, see `roboreal.agents.runner`); its ``meta["eval"]`` (``info["eval"]``)
holds those figures and the step they come from.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.registry import policy_kind


class DeterministicPolicy(nn.Module):
    def __init__(self, normalizer: nn.Module, actor: nn.Module, head: str):
        super().__init__()
        self.normalizer = normalizer
        self.actor = actor
        self.head = head  # "clamp" (a tanh, where there is one, is inside the actor) | "argmax"

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(self.normalizer(obs))
        if self.head == "argmax":
            return out.argmax(dim=-1)
        return out.clamp(-1.0, 1.0)


class ImagePolicy(DeterministicPolicy):
    """`DeterministicPolicy` that also reads camera images: ``module(obs, *images)``, images uint8
    ``(B, C, H, W)`` in the order of ``image_inputs`` (camera names)."""

    def __init__(self, normalizer: nn.Module, actor: nn.Module, head: str, image_inputs: list[str]):
        super().__init__(normalizer, actor, head)
        self.image_inputs = list(image_inputs)

    def forward(self, obs: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        out = self.actor(self.normalizer(obs), *images)
        if self.head == "argmax":
            return out.argmax(dim=-1)
        return out.clamp(-1.0, 1.0)


def policy_action(policy: nn.Module, obs: dict[str, torch.Tensor], obs_group: str = "policy") -> torch.Tensor:
    """``policy(obs[obs_group])``, plus the camera images an `ImagePolicy` reads."""
    cameras = getattr(policy, "image_inputs", None)
    if not cameras:
        return policy(obs[obs_group])
    missing = [c for c in cameras if c not in obs]
    if missing:
        raise KeyError(f"the policy reads camera image(s) {missing}; the observation has {sorted(obs)}")
    return policy(obs[obs_group], *[obs[c] for c in cameras])


def build_policy(state: dict) -> DeterministicPolicy:
    """A `DeterministicPolicy` from a checkpoint's ``policy`` entry (see `Algorithm.policy_state`);
    its ``kind`` names a policy kind of `roboreal.agents.registry`. A state with
    ``image_inputs`` (camera names) becomes an `ImagePolicy`."""
    kind, args = policy_kind(state["kind"]), state["args"]
    obs_size, action_size = int(state["obs_size"]), int(state["action_size"])
    normalizer = make_normalizer(obs_size, bool(args.get("normalize_obs", False)), float(args.get("obs_clip", 10.0)))
    actor = kind.actor_class()(obs_size, action_size, *[args[name] for name in kind.arg_names])
    actor.load_state_dict(state["actor"])
    normalizer.load_state_dict(state["normalizer"])
    if state.get("image_inputs"):
        module = ImagePolicy(normalizer, actor, kind.head, list(state["image_inputs"]))
    else:
        module = DeterministicPolicy(normalizer, actor, kind.head)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ZeroPolicy(nn.Module):
    """The zero action for every observation: the "standing still" / "do nothing" baseline
    (a quadruped holds its default pose; `roboreal play RUN --policy zero`)."""

    def __init__(self, action_size: int):
        super().__init__()
        self.action_size = action_size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[0], self.action_size, dtype=obs.dtype, device=obs.device)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint file from a run directory (``best`` falls back to ``last``) or a file path."""
    path = Path(path)
    if path.is_file():
        return path
    ckpt_dir = path / "checkpoints"
    for name in ([which, "last"] if which == "best" else [which]):
        candidate = ckpt_dir / (name if name.endswith(".pt") else f"{name}.pt")
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no checkpoint {which!r} in {ckpt_dir}")


def load_policy(run_dir: str | Path, which: str = "best", device: str = "cpu") -> tuple[DeterministicPolicy, dict]:
    """``(module, info)``: the deterministic actor (normalizer included) and what it reads/writes.

    ``info`` has ``obs_group``, ``obs_size``, ``image_inputs`` (the cameras an `ImagePolicy`
    reads, in call order; empty otherwise), ``image_shapes`` ({camera: (C, H, W)}),
    ``action_size``, ``action_type``, ``task``,
    ``algo``, ``env`` (the task overrides used in training), ``control_dt``, ``step``,
    ``checkpoint`` (the file it came from), ``which`` (what was asked for) and ``eval`` (the
    figures of the evaluation the runner made of this policy during training, or None).
    """
    ckpt_path = resolve_checkpoint(run_dir, which)
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    state = ckpt["policy"]
    module = build_policy(state).to(device)
    meta = ckpt.get("meta", {})
    info = {
        "obs_group": state["obs_group"], "obs_size": int(state["obs_size"]),
        "image_inputs": list(state.get("image_inputs") or []),
        "image_shapes": {str(c): tuple(int(v) for v in shape) for c, shape in state["args"].get("image_shapes", [])},
        "action_size": int(state["action_size"]), "action_type": state["action_type"],
        "task": meta.get("task"), "algo": meta.get("algo"), "env": meta.get("env", {}),
        "control_dt": meta.get("control_dt"), "step": meta.get("global_step"), "checkpoint": str(ckpt_path),
        "which": str(which), "eval": meta.get("eval"),
    }
    return module, info


def describe_checkpoint(info: dict) -> str:
    """One line: which checkpoint `load_policy` used, its step and, when it has them, the figures
    of its evaluation during training, e.g. ``best.pt (step 38400; evaluated at step 38400: return
    500.00 +- 0.00, 10 episodes, seed 10000)``; a ``best`` that fell back to ``last.pt`` says so."""
    name = Path(info["checkpoint"]).name
    text = f"{name} (step {info.get('step')}"
    if info.get("which") == "best" and name != "best.pt":
        text += "; the run has no best.pt yet"
    ev = info.get("eval")
    if ev:
        text += (f"; evaluated at step {ev.get('step')}: return {ev['return']:.2f} +- {ev.get('return_std', 0.0):.2f}"
                 + (f", success rate {ev['success_rate']:.0%}" if ev.get("success_rate") is not None else "")
                 + f", {ev.get('episodes')} episodes, seed {ev.get('seed')}")
    else:
        text += "; no evaluation stored"
    return text + ")"


@torch.no_grad()
def evaluate(policy: nn.Module, env, episodes: int | None = None, obs_group: str = "policy",
             max_steps: int | None = None, on_step=None, before_step=None, seed: int | None = None) -> dict:
    """Run the deterministic `policy` until every env finished its first episode.

    Returns mean/std return, mean length, success rate (NaN when the task reports none)
    and the per-episode returns; on velocity-tracking tasks (go1-walk) also the mean
    planar velocity tracking error (m/s) over the evaluated episodes' steps. ``episodes`` defaults to ``env.num_envs`` (one per env).
    ``on_step(env)`` is called after every step; ``before_step(env, finished)`` before every
    step (``finished``: envs whose first episode is over), e.g. to record a video.
    ``seed`` is passed to ``env.reset`` (None: the env's own generator continues).
    An `ImagePolicy` also gets its cameras' images from the observation (`policy_action`).
    """
    n = env.num_envs
    episodes = n if episodes is None else min(episodes, n)
    obs, _ = env.reset() if seed is None else env.reset(seed=seed)
    returns = torch.zeros(n)
    lengths = torch.zeros(n, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)
    success = torch.full((n,), float("nan"))
    limit = max_steps or env.spec.max_episode_steps + 1
    tracking = hasattr(env, "velocity_tracking_error")
    error_sum, error_steps = torch.zeros(n), torch.zeros(n)
    for _ in range(limit):
        if before_step is not None:  # e.g. render a frame of the state the action is computed from
            before_step(env, finished.clone())
        actions = policy_action(policy, obs, obs_group)
        obs, reward, terminated, truncated, info = env.step(actions)
        if on_step is not None:
            on_step(env)
        running = ~finished
        returns += torch.where(running, reward.float().cpu(), torch.zeros(n))
        lengths += running.long()
        done = (terminated | truncated).cpu() & running
        if tracking:  # done envs were reset already: their state is the next episode's
            live = running & ~done
            error_sum += torch.where(live, env.velocity_tracking_error().float().cpu(), torch.zeros(n))
            error_steps += live.float()
        if done.any():
            if "is_success" in info:
                success[done] = info["is_success"].float().cpu()[done]
            finished |= done
        if finished[:episodes].all():
            break
    sel = slice(0, episodes)
    succ = success[sel]
    extra = {"velocity_tracking_error": float(error_sum[sel].sum() / error_steps[sel].sum().clamp(min=1))} \
        if tracking else {}
    return {
        **extra,
        "mean_return": float(returns[sel].mean()), "std_return": float(returns[sel].std()) if episodes > 1 else 0.0,
        "mean_length": float(lengths[sel].float().mean()),
        "success_rate": float(succ[~succ.isnan()].mean()) if (~succ.isnan()).any() else float("nan"),
        "returns": returns[sel].tolist(), "episodes": episodes,
    }
