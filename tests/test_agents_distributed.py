"""Data-parallel PPO under torchrun: 2 CPU ranks (gloo on 127.0.0.1) end with identical parameters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, log_dir, timeout=220):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    # each rank's output also goes to its own file: a failing rank's error is otherwise buried
    # under the other rank's traceback ("connection closed by peer")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "--log-dir", str(log_dir), "--tee", "3",
           "-m", "roboreal", "train", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        ranks = "".join(f"\n--- {p.relative_to(log_dir)} ---\n{p.read_text()[-2000:]}"
                        for p in sorted(Path(log_dir).rglob("stderr.log")))
        pytest.fail(f"torchrun exited with {proc.returncode}; each rank's stderr:{ranks}")


NUM_ENVS, NUM_STEPS = 8, 16


def _train_args(run, iterations):
    return ["cartpole-balance", "--algo", "ppo", "--num-envs", str(NUM_ENVS),
            "--steps", str(2 * NUM_ENVS * NUM_STEPS * iterations), "--seed", "0", "--threads", "1",
            "--run-dir", str(run), "--no-progress", f"num_steps={NUM_STEPS}", "runner.save_interval=2"]


@pytest.mark.slow
def test_two_rank_ppo_keeps_parameters_identical_and_resumes_exactly(tmp_path):
    import torch.distributed as dist

    # the pinned CPU torch ships gloo: a build without it is a broken install, not a skip
    assert dist.is_available() and dist.is_gloo_available(), "torch.distributed with gloo is not available"
    iterations = 6
    run = tmp_path / "ddp"
    _torchrun(_train_args(run, iterations), tmp_path / "logs_full")

    rank0 = torch.load(run / "checkpoints/last.pt", weights_only=True)
    rank1 = torch.load(run / "checkpoints/last.rank1.pt", weights_only=True)
    a, b = rank0["algorithm"], rank1["algorithm"]
    assert rank0["meta"]["world_size"] == 2 and rank1["meta"]["rank"] == 1
    # each rank stepped its own envs (different seeds) ...
    assert not torch.equal(a["obs"]["policy"], b["obs"]["policy"])
    # ... yet gradients, KL (hence learning rate) and normalizer statistics were all-reduced:
    for part in ("actor", "critic", "actor_norm"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    assert a["learning_rate"] == b["learning_rate"]
    # the normalizer saw both ranks' observations: (initial + one per step) x envs x 2 ranks
    assert a["actor_norm"]["count"].item() == 2 * NUM_ENVS * (1 + NUM_STEPS * iterations)
    assert rank0["meta"]["global_step"] == 2 * NUM_ENVS * NUM_STEPS * iterations
    # only rank 0 wrote logs
    assert (run / "progress.csv").is_file() and (run / "config.yaml").is_file()
    assert not (run / "checkpoints/last.rank0.pt").exists()

    # stop after 4 iterations, resume under torchrun to 6: every rank continues its own envs exactly
    part = tmp_path / "part"
    _torchrun(_train_args(part, 4), tmp_path / "logs_part")
    _torchrun(["--resume", str(part), "--steps", str(2 * NUM_ENVS * NUM_STEPS * iterations), "--threads", "1",
               "--no-progress"], tmp_path / "logs_resume")
    for name in ("last.pt", "last.rank1.pt"):
        full = torch.load(run / "checkpoints" / name, weights_only=True)
        resumed = torch.load(part / "checkpoints" / name, weights_only=True)
        for key in ("actor", "critic", "actor_norm", "optimizer", "obs"):
            fa, fb = full["algorithm"][key], resumed["algorithm"][key]
            if key == "optimizer":
                fa, fb = fa["state"], fb["state"]
                fa = {(i, k): v for i, s in fa.items() for k, v in s.items()}
                fb = {(i, k): v for i, s in fb.items() for k, v in s.items()}
            assert fa.keys() == fb.keys()
            for k in fa:
                assert torch.equal(fa[k], fb[k]), f"{name} {key}.{k}"
