"""The training runner: run directory, safe checkpoints, exact resume, determinism, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from roboreal.agents.policy import load_policy
from roboreal.agents.run_config import resolve_config
from roboreal.agents.runner import resume, train
from checkpoint_state import assert_same_state, load_ckpt
from roboreal.cli import main


def test_run_directory_and_safe_checkpoints(tmp_path):
    cfg = resolve_config("cartpole-balance", "ppo", ["runner.save_interval=2", "num_steps=16"], num_envs=8,
                         total_steps=8 * 16 * 3, seed=0)
    result = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert result["iterations"] == 3 and result["global_step"] == 384
    for name in ("config.yaml", "progress.csv", "metrics.json", "learning_curve.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "checkpoints/iter_000002.pt"):
        assert (run / name).is_file(), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    assert {"train/return", "train/success_rate", "reward_terms/alive", "loss/policy", "loss/value", "policy/kl",
            "policy/learning_rate", "perf/sps", "eval/return", "eval/length"} <= set(tags)
    for ckpt in (run / "checkpoints").glob("*.pt"):
        data = torch.load(ckpt, weights_only=True)  # the safe unpickler loads every checkpoint
        assert data["meta"]["task"] == "cartpole-balance" and "policy" in data
    last = load_ckpt(run / "checkpoints/last.pt")
    assert {"algorithm", "rng", "env", "runner", "config"} <= last.keys()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 384 and metrics["iterations"] == 3
    header = (run / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"step", "train/return", "loss/policy", "loss/value", "policy/kl", "perf/sps",
            "reward_terms/alive", "eval/return"} <= set(header)
    # the export hook: a plain module, raw policy observation -> action in [-1, 1], normalizer inside
    module, info = load_policy(run, "last")
    assert info["obs_group"] == "policy" and info["obs_size"] == 4 and info["action_size"] == 1
    assert isinstance(module, torch.nn.Module)
    obs = torch.randn(16, 4) * 5
    action = module(obs)
    assert action.shape == (16, 1) and action.abs().max() <= 1.0
    traced = torch.jit.trace(module, obs[:1])
    torch.testing.assert_close(traced(obs), action)
    # it is the training actor: same output as the mean of the Gaussian with the checkpoint's normalizer
    state = last["algorithm"]
    norm = state["actor_norm"]
    x = ((obs - norm["mean"].float()) / torch.sqrt(norm["var"] + 1e-8).float()).clamp(-10, 10)
    from roboreal.agents.networks import GaussianActor

    actor = GaussianActor(4, 1, cfg.algorithm["actor_hidden"], cfg.algorithm["activation"])
    actor.load_state_dict(state["actor"])
    torch.testing.assert_close(action, actor(x).clamp(-1, 1))


CROSSQ_TINY = ["steps_per_iteration=5", "learning_starts=40", "utd_ratio=0.5", "batch_size=32", "buffer_size=1000",
               "actor_hidden=[32,32]", "critic_hidden=[32,32]", "brn_warmup_steps=10"]
RESUME_CASES = {
    # name: (task, algo, overrides, num_envs, iterations)
    "ppo": ("cartpole-balance", "ppo", ["num_steps=16"], 8, 6),
    "ppo-go1-randomized": ("go1-walk", "ppo", ["num_steps=8", "actor_hidden=[32,32]", "critic_hidden=[32,32]"], 4, 6),
    "sac": ("cartpole-balance", "sac", ["steps_per_iteration=10", "learning_starts=40", "hidden=[32,32]",
                                       "batch_size=32", "buffer_size=1000"], 4, 6),
    "sac-her-panda": ("panda-reach-sparse", "sac", ["steps_per_iteration=10", "learning_starts=40", "hidden=[32,32]",
                                                    "batch_size=32", "buffer_size=1000"], 4, 6),
    "dqn": ("cartpole-balance-discrete", "dqn", ["steps_per_iteration=10", "learning_starts=40", "hidden=[32,32]",
                                                 "batch_size=32", "buffer_size=1000", "target_update_interval=7"],
            4, 6),
    # CrossQ on both observation layouts (go1: asymmetric critic, normalization, randomized env); a
    # short BatchRenorm warm-up so the renormalizing branch runs before and after the resume
    "crossq": ("cartpole-balance", "crossq", CROSSQ_TINY, 4, 6),
    "crossq-go1": ("go1-walk", "crossq", CROSSQ_TINY, 4, 6),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path, case):
    task, algo, overrides, num_envs, iterations = RESUME_CASES[case]
    cfg = resolve_config(task, algo, overrides + ["runner.save_interval=2"], num_envs=num_envs, seed=3)
    per_iter = num_envs * (cfg.algorithm["num_steps"] if algo == "ppo" else cfg.algorithm["steps_per_iteration"])
    cfg = resolve_config(task, algo, overrides + ["runner.save_interval=2"], num_envs=num_envs, seed=3,
                         total_steps=per_iter * iterations)
    full = train(cfg, tmp_path / "full", progress=False)
    # "killed" after iteration 3: its last checkpoint is from iteration 2, iteration 3 is lost and redone
    train(cfg, tmp_path / "killed", progress=False, stop_after_iterations=3)
    assert load_ckpt(tmp_path / "killed/checkpoints/last.pt")["meta"]["iteration"] == 2
    resumed = resume(tmp_path / "killed", progress=False)
    assert resumed["resumed_exact"] and resumed["iterations"] == full["iterations"] == iterations
    a = load_ckpt(tmp_path / "full/checkpoints/last.pt")
    b = load_ckpt(tmp_path / "killed/checkpoints/last.pt")
    assert_same_state(a["algorithm"], b["algorithm"])  # parameters, optimizers, normalizers, replay, obs
    assert_same_state(a["env"], b["env"])
    assert_same_state(a["rng"], b["rng"])
    strip = [{k: v for k, v in row.items() if k not in ("time_s", "perf/sps")} for row in a["runner"]["history"]]
    strip_b = [{k: v for k, v in row.items() if k not in ("time_s", "perf/sps")} for row in b["runner"]["history"]]
    assert strip == strip_b
    if algo != "ppo":
        assert b["algorithm"]["updates"] > 0


def test_same_seed_same_result_and_seed_matters(tmp_path):
    def run(name, seed):
        cfg = resolve_config("cartpole-balance", "ppo", ["num_steps=16"], num_envs=8, seed=seed, total_steps=8 * 16 * 3)
        train(cfg, tmp_path / name, progress=False)
        return load_ckpt(tmp_path / name / "checkpoints/last.pt")["algorithm"]

    a, b, c = run("a", 5), run("b", 5), run("c", 6)
    assert_same_state(a, b)
    assert not torch.equal(a["actor"]["mean_net.0.weight"], c["actor"]["mean_net.0.weight"])


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = resolve_config("cartpole-balance", "ppo", ["num_steps=8"], num_envs=4, total_steps=32)
    train(cfg, tmp_path / "run", progress=False)
    from roboreal.config import ConfigError

    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, tmp_path / "run", progress=False)


def test_cli_train_resume_play(tmp_path, capsys):
    run = tmp_path / "dqn"
    args = ["train", "cartpole-balance-discrete", "--algo", "dqn", "--num-envs", "4", "--steps", "400",
            "--run-dir", str(run), "--no-progress", "learning_starts=100", "steps_per_iteration=25",
            "--seed", "2", "runner.save_interval=2", "env.max_force=9.0"]
    assert main(args) == 0
    cfg = (run / "config.yaml").read_text()
    assert "max_force: 9.0" in cfg and "learning_starts: 100" in cfg and "seed: 2" in cfg
    assert main(["train", "--resume", str(run), "--steps", "600", "--no-progress"]) == 0
    assert load_ckpt(run / "checkpoints/last.pt")["meta"]["global_step"] == 600
    capsys.readouterr()
    video = tmp_path / "play.mp4"
    assert main(["play", str(run), "--episodes", "3", "--video", str(video), "--width", "64", "--height", "48"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out and "3 episodes" in out
    # which checkpoint, its step, and the figure the runner evaluated it at
    best = load_ckpt(run / "checkpoints/best.pt")["meta"]
    assert f"checkpoint: best -> best.pt (step {best['global_step']}; evaluated at step {best['global_step']}: " \
           f"return {best['eval']['return']:.2f}" in out
    assert video.stat().st_size > 0
    # errors name their cause and exit 2
    assert main(["train", "cartpole-balance", "--algo", "ppo", "lerning_rate=0.1", "--run-dir",
                 str(tmp_path / "x")]) == 2
    assert "lerning_rate: unknown field" in capsys.readouterr().err
    assert main(["train", "cartpole-balance", "--algo", "dqn", "--run-dir", str(tmp_path / "y")]) == 2
    assert "dqn needs discrete actions" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_to_the_uninterrupted_result(tmp_path):
    """A real `kill -9` of `roboreal train` at an arbitrary moment, then `--resume`."""
    import os
    import subprocess
    import sys
    import time

    iterations = 40

    def cmd(run):
        return [sys.executable, "-m", "roboreal", "train", "cartpole-balance", "--algo", "ppo", "--num-envs", "8",
                "--steps", str(8 * 64 * iterations), "--seed", "1", "--threads", "1", "--run-dir", str(run),
                "--no-progress", "num_steps=64", "runner.save_interval=1", "runner.keep_periodic=false"]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints/last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and load_ckpt(last)["meta"]["iteration"] >= 3:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, proc.stderr.read().decode()[-2000:]
    stopped_at = load_ckpt(last)["meta"]["iteration"]
    assert 3 <= stopped_at < iterations
    resumed = subprocess.run([sys.executable, "-m", "roboreal", "train", "--resume", str(killed), "--threads", "1",
                              "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    a = load_ckpt(tmp_path / "full/checkpoints/last.pt")
    b = load_ckpt(last)
    assert b["meta"]["iteration"] == iterations
    assert_same_state(a["algorithm"], b["algorithm"])
    assert_same_state(a["env"], b["env"])


def test_gym_task_trains_and_resumes_with_reseeded_envs(tmp_path, capsys):
    cfg = resolve_config("gym:Pendulum-v1", "ppo", ["num_steps=16", "runner.save_interval=1"], num_envs=2,
                         total_steps=2 * 16 * 3)
    train(cfg, tmp_path / "run", progress=False, stop_after_iterations=2)
    result = resume(tmp_path / "run", progress=False)
    assert result["iterations"] == 3 and not result["resumed_exact"]
    assert "re-seeded" in capsys.readouterr().out


def test_wall_clock_budget_ends_the_run_normally(tmp_path):
    """runner.max_time_s: the run stops once the budget is spent, well short of total_steps,
    and ends like a finished run (final checkpoint, metrics, learning curve)."""
    cfg = resolve_config("cartpole-balance", "ppo", ["runner.max_time_s=1.5"], num_envs=8, total_steps=10**9, seed=0)
    result = train(cfg, tmp_path / "run", progress=False)
    assert 1.5 <= result["wall_time_s"] < 30 and result["global_step"] < 10**9
    for name in ("checkpoints/last.pt", "metrics.json", "learning_curve.png"):
        assert (tmp_path / "run" / name).exists(), name
    with pytest.raises(Exception, match="max_time_s"):
        resolve_config("cartpole-balance", "ppo", ["runner.max_time_s=-1"])


# ----------------------------------------------------------------------------------------------
# best.pt by deterministic evaluation (runner.eval_interval / eval_episodes)

TINY_PPO = ["num_steps=16", "runner.save_interval=3"]


def _rows(run: Path) -> list[dict]:
    import csv

    with open(run / "progress.csv") as f:
        return list(csv.DictReader(f))


def test_best_pt_is_the_best_evaluated_policy_and_evaluation_leaves_training_alone(tmp_path, capsys):
    from roboreal.agents.policy import evaluate
    from roboreal.envs import make

    cfg = resolve_config("cartpole-balance", "ppo", TINY_PPO + ["runner.eval_interval=2", "runner.eval_episodes=4"],
                         num_envs=8, seed=0, total_steps=8 * 16 * 7)
    run = tmp_path / "run"
    result = train(cfg, run, progress=False)
    rows = _rows(run)
    evaluated = [r for r in rows if r["eval/return"] != ""]
    # every eval_interval iterations, and once at the end
    assert [int(r["iteration"]) for r in evaluated] == [2, 4, 6, 7]
    best = load_ckpt(run / "checkpoints/best.pt")["meta"]
    figures = best["eval"]
    returns = [float(r["eval/return"]) for r in evaluated]
    first_best = evaluated[returns.index(max(returns))]
    assert figures["return"] == max(returns) and figures["step"] == best["global_step"] == int(first_best["step"])
    assert figures["episodes"] == 4 and figures["seed"] == 10_000
    # the stored figure is what a fresh deterministic evaluation of best.pt on the eval seed gives
    module, info = load_policy(run, "best")
    env = make("cartpole-balance", num_envs=4, seed=10_000)
    fresh = evaluate(module, env)
    env.close()
    assert fresh["mean_return"] == figures["return"] and fresh["mean_length"] == figures["length"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_by"] == "eval" and metrics["best_step"] == figures["step"]
    assert metrics["best_eval"]["return"] == figures["return"] == result["best"]
    assert metrics["final_eval"]["iteration"] == 7 and metrics["final_eval"]["return"] == returns[-1]
    assert load_ckpt(run / "checkpoints/last.pt")["meta"]["eval"]["iteration"] == 7
    # play and export say which checkpoint they used, its step and its evaluated figure
    capsys.readouterr()
    assert main(["play", str(run), "--episodes", "4", "--seed", "10000"]) == 0
    out = capsys.readouterr().out
    assert f"best.pt (step {figures['step']}; evaluated at step {figures['step']}: return {figures['return']:.2f}" in out
    assert f"mean return {figures['return']:.2f}" in out
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 0
    assert f"best.pt (step {figures['step']}; evaluated at step" in capsys.readouterr().out
    import yaml

    training = yaml.safe_load((tmp_path / "bundle/manifest.yaml").read_text())["training"]
    assert training["step"] == figures["step"] and training["eval"]["return"] == figures["return"]

    # Without evaluation (eval_interval=0) the same run trains to the same parameters (evaluation
    # draws nothing from the training RNG streams), and best.pt follows the training mean.
    cfg0 = resolve_config("cartpole-balance", "ppo", TINY_PPO + ["runner.eval_interval=0"], num_envs=8, seed=0,
                          total_steps=8 * 16 * 7)
    train(cfg0, tmp_path / "no_eval", progress=False)
    a, b = load_ckpt(run / "checkpoints/last.pt"), load_ckpt(tmp_path / "no_eval/checkpoints/last.pt")
    assert_same_state(a["algorithm"], b["algorithm"])
    assert_same_state(a["rng"], b["rng"])
    assert "eval/return" not in _rows(tmp_path / "no_eval")[0]
    assert "eval" not in load_ckpt(tmp_path / "no_eval/checkpoints/best.pt")["meta"]
    assert json.loads((tmp_path / "no_eval/metrics.json").read_text())["best_by"].startswith("train/return")


def test_goal_task_best_pt_by_success_rate_then_return(tmp_path):
    over = ["steps_per_iteration=10", "learning_starts=40", "hidden=[32,32]", "batch_size=32", "buffer_size=1000",
            "runner.eval_interval=1", "runner.eval_episodes=3"]
    cfg = resolve_config("panda-reach-sparse", "sac", over, num_envs=4, seed=0, total_steps=4 * 10 * 5)
    train(cfg, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    assert len(rows) == 5 and all(r["eval/success_rate"] != "" for r in rows)
    keys = [(float(r["eval/success_rate"]), float(r["eval/return"])) for r in rows]
    figures = load_ckpt(tmp_path / "run/checkpoints/best.pt")["meta"]["eval"]
    # lexicographic: success rate first, return breaks ties; the first of equal evaluations stays
    assert (figures["success_rate"], figures["return"]) == max(keys)
    assert figures["iteration"] == keys.index(max(keys)) + 1


def test_eval_settings_are_validated_naming_the_field():
    from roboreal.config import ConfigError

    for override, field in (("runner.eval_interval=-1", "runner.eval_interval"),
                            ("runner.eval_episodes=0", "runner.eval_episodes"),
                            ("runner.eval_episodes=many", "runner.eval_episodes"),
                            ("runner.eval_intervall=5", "runner.eval_intervall")):
        with pytest.raises(ConfigError) as e:
            resolve_config("cartpole-balance", "ppo", [override])
        assert e.value.field == field, (override, str(e.value))
    assert resolve_config("cartpole-balance", "ppo", ["runner.eval_interval=0"]).runner.eval_interval == 0


def test_resume_keeps_the_best_evaluation(tmp_path):
    """A resumed run never replaces a better best.pt: the best evaluation is part of last.pt's
    resume state, and a best.pt evaluated after last.pt was written (killed in between) counts too."""
    import shutil

    from roboreal.agents.runner import atomic_save

    cfg = resolve_config("cartpole-balance", "ppo", ["num_steps=16", "runner.save_interval=2",
                                                     "runner.eval_interval=1", "runner.eval_episodes=2"],
                         num_envs=8, seed=1, total_steps=8 * 16 * 5)
    killed = tmp_path / "killed"
    train(cfg, killed, progress=False, stop_after_iterations=3)  # last.pt: iteration 2; evaluated 1, 2, 3
    assert load_ckpt(killed / "checkpoints/last.pt")["runner"]["best_eval"]

    # (a) the best evaluation in last.pt's state is unbeatable: no later evaluation replaces best.pt
    a = tmp_path / "a"
    shutil.copytree(killed, a)
    last = load_ckpt(a / "checkpoints/last.pt")
    last["runner"]["best_eval"]["return"] = 1e9
    atomic_save(last, a / "checkpoints/last.pt")
    before = (a / "checkpoints/best.pt").read_bytes()
    result = resume(a, progress=False)
    assert len([r for r in _rows(a) if r["eval/return"] != ""]) == 5  # it did evaluate
    assert (a / "checkpoints/best.pt").read_bytes() == before
    assert result["best_eval"]["return"] == 1e9

    # (b) last.pt knows no evaluation, but best.pt (written after it) holds an unbeatable one
    b = tmp_path / "b"
    shutil.copytree(killed, b)
    last = load_ckpt(b / "checkpoints/last.pt")
    last["runner"]["best_eval"] = {}
    atomic_save(last, b / "checkpoints/last.pt")
    best = load_ckpt(b / "checkpoints/best.pt")
    best["meta"]["eval"]["return"] = 1e9
    atomic_save(best, b / "checkpoints/best.pt")
    before = (b / "checkpoints/best.pt").read_bytes()
    resume(b, progress=False)
    assert (b / "checkpoints/best.pt").read_bytes() == before
    assert json.loads((b / "metrics.json").read_text())["best_eval"]["return"] == 1e9
