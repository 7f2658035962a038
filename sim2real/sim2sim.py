"""sim2sim: run an exported bundle (not the training code) under held-out perturbations.

The bundle's `act` drives the simulator twice: once nominal (as trained) and once with
a randomization preset whose ranges go beyond what training used (friction, masses,
centre of mass, PD gains, motor strength, action latency, observation noise, pushes).
The side-by-side return / success (and for go1-walk, velocity tracking error) tells a
user, before touching hardware, whether the policy will survive reality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roboreal.config import load_yaml
from roboreal.sim2real.bundle import BundlePolicy, load_bundle

# Held-out perturbations: wider than any training preset in roboreal's task configs.
HEAVY = {
    "enabled": True,
    "friction": {"range": [0.3, 1.6], "mode": "reset"},
    "mass_scale": {"range": [0.75, 1.3], "mode": "reset"},
    "com_offset": {"range": [-0.03, 0.03], "mode": "reset"},
    "kp_scale": {"range": [0.8, 1.2], "mode": "reset"},
    "kd_scale": {"range": [0.7, 1.3], "mode": "reset"},
    "motor_strength": {"range": [0.8, 1.2], "mode": "reset"},
    "action_latency": {"range": [0, 2], "mode": "reset"},
    "push": {"interval_s": 4.0, "max_velocity": [0.8, 0.8]},
}
HEAVY_NOISE = {"joint_pos": 0.02, "joint_vel": 2.0, "base_ang_vel": 0.3, "projected_gravity": 0.08, "ee_pos": 0.01}
PRESETS = ("none", "heavy")


def perturbation_overrides(preset: str | Path, bundle: BundlePolicy) -> dict:
    """Task overrides for a preset name or a YAML file with ``randomization``/``observation_noise``."""
    terms = {t["name"] for t in bundle.manifest["observation"]["terms"]}
    if preset == "none":
        return {"randomization": {"enabled": False}}
    if preset == "heavy":
        return {"randomization": HEAVY, "observation_noise": {k: v for k, v in HEAVY_NOISE.items() if k in terms}}
    return load_yaml(preset) or {}


@torch.no_grad()
def evaluate_bundle(bundle: BundlePolicy, episodes: int, seed: int = 0, overrides: dict | None = None) -> dict:
    """Roll the bundle out for one episode in each of `episodes` parallel envs."""
    from roboreal.agents.policy import evaluate
    from roboreal.envs import make

    train = bundle.manifest["training"]
    env_kwargs = {**(train.get("env_overrides") or {}), **(overrides or {})}
    env = make(train["task"], num_envs=episodes, seed=seed, **env_kwargs)
    group = bundle.manifest["observation"]["group"]
    tracking: list[torch.Tensor] = []

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(bundle.act(obs.cpu().numpy()))

    def on_step(e) -> None:
        if hasattr(e, "velocity_tracking_error"):
            tracking.append(e.velocity_tracking_error().cpu())

    stats = evaluate(policy, env, episodes=episodes, obs_group=group, on_step=on_step)
    if tracking:
        stats["velocity_tracking_error"] = float(torch.stack(tracking).mean())
    env.close()
    return stats


def run_sim2sim(bundle_path: str | Path, randomize: str = "heavy", episodes: int = 32, seed: int = 0,
                runtime: str = "onnx") -> dict:
    bundle = load_bundle(bundle_path, robot=None, runtime=runtime)
    from roboreal.robots.spec import load_robot
    from roboreal.sim2real.bundle import check_robot

    check_robot(bundle.manifest, load_robot(bundle.manifest["robot"]["name"]))
    nominal = evaluate_bundle(bundle, episodes, seed, perturbation_overrides("none", bundle))
    perturbed = evaluate_bundle(bundle, episodes, seed + 1, perturbation_overrides(randomize, bundle))
    return {"nominal": nominal, "perturbed": perturbed, "preset": str(randomize), "episodes": episodes}


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    nom, per = result["nominal"], result["perturbed"]
    table = Table(title=f"sim2sim: nominal vs {result['preset']} perturbations ({result['episodes']} episodes each)")
    for col in ("metric", "nominal", result["preset"], "ratio"):
        table.add_column(col)
    rows = [("mean return", "mean_return"), ("success rate", "success_rate"), ("mean length", "mean_length"),
            ("velocity tracking error (m/s)", "velocity_tracking_error")]
    for label, key in rows:
        if key not in nom:
            continue
        a, b = nom[key], per[key]
        if isinstance(a, float) and np.isnan(a):
            continue
        ratio = f"{b / a:.2f}" if a not in (0, 0.0) else "-"
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", ratio)
    Console(width=120).print(table)
