"""Adding an algorithm = its file + one registration (`roboreal.agents.registry`): a toy
algorithm registered here, and nowhere else, trains through `roboreal train`, resumes
exactly, and plays and exports through the same commands as the built-in algorithms."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from checkpoint_state import assert_same_state, load_ckpt
from roboreal.agents.base import Algorithm, obs_to
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.policy import load_policy
from roboreal.agents.registry import (algorithm_names, register_algorithm, register_policy_kind,
                                      unregister_algorithm, unregister_policy_kind)
from roboreal.agents.run_config import resolve_config
from roboreal.agents.runner import resume, train
from roboreal.cli import main
from roboreal.config import ConfigError

ALGO, KIND = "toy-hillclimb", "toy_linear"
STEPS_PER_ITERATION, NUM_ENVS = 8, 4


# ----- the "algorithm file" -----
@dataclass
class HillClimbConfig:
    steps_per_iteration: int = STEPS_PER_ITERATION
    noise_std: float = 0.5  # std of the weight perturbation tried in each iteration


class LinearActor(nn.Module):
    """Policy kind ``toy_linear``: tanh of a linear map (actor(obs_size, action_size), no args)."""

    def __init__(self, obs_size: int, action_size: int):
        super().__init__()
        self.linear = nn.Linear(obs_size, action_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(obs))


class HillClimb(Algorithm):
    """Random-search hill climbing: act with perturbed weights for an iteration and keep them
    if their mean reward beats the best so far."""

    name = ALGO

    def __init__(self, env, cfg: HillClimbConfig, device="cpu", total_steps=0, dist=None):
        super().__init__(env, cfg, device, total_steps, dist)
        self.obs_size, self.action_size = env.spec.observation_sizes["policy"], env.spec.action_size
        self.actor = LinearActor(self.obs_size, self.action_size).to(self.device)
        self.normalizer = make_normalizer(self.obs_size, False)
        self.best_reward = -float("inf")
        obs, _ = env.reset()
        self.obs = obs_to(obs, self.device)

    @torch.no_grad()
    def iteration(self) -> dict[str, float]:
        kept = {k: v.clone() for k, v in self.actor.state_dict().items()}
        for p in self.actor.parameters():
            p.add_(torch.randn_like(p) * self.cfg.noise_std)  # torch's global RNG: checkpointed by the runner
        total = 0.0
        for _ in range(self.cfg.steps_per_iteration):
            obs, reward, _, _, _ = self.step_env(self.actor(self.obs["policy"]))
            self.obs = obs_to(obs, self.device)
            total += float(reward.mean())
        rate = total / self.cfg.steps_per_iteration
        if rate > self.best_reward:
            self.best_reward = rate
        else:
            self.actor.load_state_dict(kept)
        return {"toy/reward_rate": rate}

    def state_dict(self, include_replay: bool = True) -> dict:
        return {"actor": self.actor.state_dict(), "obs": self.obs, "best_reward": self.best_reward,
                "global_step": self.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.obs = obs_to(state["obs"], self.device)
        self.best_reward = float(state["best_reward"])
        self.global_step = int(state["global_step"])

    def policy_state(self) -> dict:
        return {"kind": KIND, "obs_group": "policy", "obs_size": self.obs_size, "action_size": self.action_size,
                "action_type": "continuous", "args": {}, "actor": self.actor.state_dict(),
                "normalizer": self.normalizer.state_dict()}

    @torch.no_grad()
    def act_deterministic(self, obs) -> torch.Tensor:
        return self.actor(obs["policy"])


# ----- the registration -----
@pytest.fixture
def toy_algorithm():
    register_policy_kind(KIND, LinearActor, ())
    register_algorithm(ALGO, HillClimb, HillClimbConfig, KIND)
    yield
    unregister_algorithm(ALGO)
    unregister_policy_kind(KIND)


def test_a_registered_algorithm_trains_resumes_plays_and_exports(toy_algorithm, tmp_path, capsys):
    iterations = 4
    run = tmp_path / "run"
    assert main(["train", "cartpole-balance", "--algo", ALGO, "--num-envs", str(NUM_ENVS), "--seed", "1",
                 "--steps", str(NUM_ENVS * STEPS_PER_ITERATION * iterations), "--run-dir", str(run),
                 "--no-progress", "noise_std=0.3", "runner.save_interval=2", "runner.eval_interval=2",
                 "runner.eval_episodes=2"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["algo"] == ALGO and config["algorithm"] == {"steps_per_iteration": 8, "noise_std": 0.3}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iterations"] == iterations and metrics["best_eval"]["episodes"] == 2
    assert "toy/reward_rate" in (run / "progress.csv").read_text().splitlines()[0].split(",")
    with pytest.raises(ConfigError, match="noise_stdd: unknown field"):  # its config is validated like any other
        resolve_config("cartpole-balance", ALGO, ["noise_stdd=1"])

    # resume: a run killed after iteration 3 (last checkpoint: iteration 2) ends where the full run did
    cfg = resolve_config("cartpole-balance", ALGO, ["noise_std=0.3", "runner.save_interval=2",
                                                   "runner.eval_interval=2", "runner.eval_episodes=2"],
                         num_envs=NUM_ENVS, seed=1, total_steps=NUM_ENVS * STEPS_PER_ITERATION * iterations)
    train(cfg, tmp_path / "killed", progress=False, stop_after_iterations=3)
    assert resume(tmp_path / "killed", progress=False)["resumed_exact"]
    full, resumed = load_ckpt(run / "checkpoints/last.pt"), load_ckpt(tmp_path / "killed/checkpoints/last.pt")
    assert_same_state(full["algorithm"], resumed["algorithm"])

    # play / export rebuild the registered policy kind: the training actor, deterministic
    module, info = load_policy(run, "last")
    assert info["algo"] == ALGO and info["obs_size"] == 4
    actor = LinearActor(4, 1)
    actor.load_state_dict(full["algorithm"]["actor"])
    obs = torch.randn(32, 4) * 3
    torch.testing.assert_close(module(obs), actor(obs))
    capsys.readouterr()
    assert main(["play", str(run), "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert f"cartpole-balance ({ALGO}, best.pt" in out and "2 episodes, mean return" in out

    from roboreal.policy_bundle import load_bundle
    from roboreal.sim2real.bundle import export_bundle

    bundle = load_bundle(export_bundle(run, which="last"), runtime="onnx")
    np.testing.assert_allclose(bundle.act(obs.numpy()), module(obs).numpy(), atol=1e-5, rtol=0)


def test_registration_errors_name_the_cause(toy_algorithm):
    with pytest.raises(ConfigError, match=r"unknown algorithm 'nope' \(available: ppo, sac, crossq, dqn, "
                                          r"toy-hillclimb\)"):
        resolve_config("cartpole-balance", "nope")
    with pytest.raises(ValueError, match="unregistered policy kind 'no_such_kind'"):
        register_algorithm("toy-2", HillClimb, HillClimbConfig, "no_such_kind")
    with pytest.raises(ValueError, match="'toy-hillclimb' is registered already"):
        register_algorithm(ALGO, HillClimb, HillClimbConfig, KIND)
    assert "toy-2" not in algorithm_names()


def test_the_registry_imports_no_algorithm_until_one_is_used():
    code = ("import sys; from roboreal.agents.registry import algorithm_classes, algorithm_names; "
            "names = algorithm_names(); "
            "before = sorted(m for m in sys.modules if m.startswith('roboreal.agents.') and m != "
            "'roboreal.agents.registry'); "
            "algorithm_classes('sac'); print(names, before, 'roboreal.agents.sac' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('ppo', 'sac', 'crossq', 'dqn') [] True"
