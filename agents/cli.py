"""`roboreal train` and `roboreal play`.

    roboreal train cartpole-balance --algo ppo --seed 1 learning_rate=0.0005 env.max_force=8
    roboreal train --resume runs/cartpole-balance_ppo_20250101-120000 [--steps 300000]
    torchrun --nproc_per_node 2 -m roboreal train cartpole-balance --algo ppo   # data-parallel PPO
    roboreal play runs/cartpole-balance_ppo_20250101-120000 --episodes 16 --video cartpole.mp4

Overrides ``key=value`` set algorithm hyper-parameters; ``env.<field>=value`` set task
config fields and ``runner.<field>=value`` runner settings. Every key is validated.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from roboreal.agents.registry import algorithm_names
from roboreal.cli import IntermixedParser
from roboreal.config import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy (PPO, SAC(+HER), DQN) on a task; writes a run directory",
                       description="Train a policy. Overrides: key=value (algorithm), env.key=value (task), "
                                   "runner.key=value (checkpoints/logging).")
    p.add_argument("task", nargs="?", help="task name (see `roboreal tasks`) or gym:<EnvId>")
    p.add_argument("--algo", choices=algorithm_names(), default="ppo", help="a registered algorithm")
    p.add_argument("--num-envs", type=int, default=None, help="parallel envs (per rank under torchrun)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="total env steps (all ranks)")
    p.add_argument("--run-dir", default=None, help="output directory (default: runs/<task>_<algo>_<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a run from its last checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("overrides", nargs="*", help="key=value, env.key=value, runner.key=value")
    p.set_defaults(handler=cmd_train)
    p.__class__ = IntermixedParser

    p = sub.add_parser("play", help="evaluate a trained policy (deterministic); optional video")
    p.add_argument("run_dir", help="run directory (or a checkpoint file)")
    p.add_argument("--checkpoint", default="best",
                   help="best (the best evaluated policy; last.pt if none yet) | last | iter_000100 | a .pt path")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--device", default="cpu")
    p.add_argument("--policy", choices=("trained", "zero"), default="trained",
                   help="zero: evaluate the zero action (standing still) on the run's task and episodes instead")
    p.add_argument("--video", default=None, help="write env 0's first episode to this .mp4 (MUJOCO_GL=egl)")
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.set_defaults(handler=cmd_play)


def _init_distributed(device: str):
    """Under torchrun (WORLD_SIZE > 1): init the process group; return (DistContext, device)."""
    from roboreal.agents.base import DistContext

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), True), device


def cmd_train(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(args: argparse.Namespace) -> int:
    import torch

    from roboreal.agents import run_config
    from roboreal.agents import runner as R  # R.train looked up at call time, so tests can stub it

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        if args.overrides or args.task or any(v is not None for v in (args.seed, args.num_envs, args.device)):
            raise ConfigError("resume", "a resumed run keeps its config; only --steps may change")
        cfg = run_config.load_run_config(args.resume)
        dist_ctx, device = _init_distributed(cfg.device)
        result = R.resume(args.resume, total_steps=args.steps, progress=not args.no_progress, dist=dist_ctx,
                          device=device)
        run_dir = Path(args.resume)
    else:
        if not args.task:
            raise ConfigError("task", "give a task (see `roboreal tasks`) or --resume RUN_DIR")
        cfg = run_config.resolve_config(args.task, args.algo, args.overrides, seed=args.seed,
                                        num_envs=args.num_envs, device=args.device, total_steps=args.steps)
        _, note = run_config.preset_section(args.task, args.algo, cfg.env.get("robot"))
        if note:
            print(f"note: {note}", file=sys.stderr)
        dist_ctx, device = _init_distributed(cfg.device)
        if device != cfg.device:
            import dataclasses

            cfg = dataclasses.replace(cfg, device=device)
        run_dir = args.run_dir or f"runs/{args.task.replace(':', '-').replace('/', '-')}_{args.algo}_" \
                                  f"{time.strftime('%Y%m%d-%H%M%S')}"
        if dist_ctx.enabled:  # every rank writes to rank 0's directory
            import torch.distributed as dist

            box = [run_dir]
            dist.broadcast_object_list(box, src=0)
            run_dir = box[0]
        result = R.train(cfg, run_dir, progress=not args.no_progress, dist=dist_ctx)
        run_dir = Path(run_dir)
    if dist_ctx.is_main:
        line = f"{run_dir}: {result['global_step']} steps in {result['wall_time_s']:.0f} s"
        if result.get("train/return") is not None:
            line += f", mean return {result['train/return']:.2f}"
        if result.get("train/success_rate") is not None:
            line += f", success rate {result['train/success_rate']:.0%}"
        best = result.get("best_eval")
        if best:
            line += (f"; best.pt: step {best['step']}, evaluated return {best['return']:.2f}"
                     + (f", success rate {best['success_rate']:.0%}" if best.get("success_rate") is not None else ""))
        print(line)
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")
    from roboreal.agents.policy import ZeroPolicy, describe_checkpoint, evaluate, load_policy
    from roboreal.envs import make

    try:
        module, info = load_policy(args.run_dir, args.checkpoint, device=args.device)
    except FileNotFoundError as e:
        raise ConfigError("run_dir", str(e)) from None
    if args.policy == "zero":
        if info["action_type"] != "continuous":
            raise ConfigError("policy", f"zero needs continuous actions; {info['task']} has discrete actions")
        module = ZeroPolicy(info["action_size"]).to(args.device)
    else:  # which checkpoint, its step and the figure the runner evaluated it at
        print(f"checkpoint: {args.checkpoint} -> {describe_checkpoint(info)}")
    env = make(info["task"], num_envs=args.episodes, device=args.device, seed=args.seed, **(info["env"] or {}))
    frames: list = []

    def record(env_, finished_before):
        if args.video and not bool(finished_before[0]):
            frames.append(env_.render(0, args.width, args.height))

    result = evaluate(module, env, obs_group=info["obs_group"], before_step=record if args.video else None)
    if args.video:
        import imageio.v2 as imageio

        fps = max(1, round(1.0 / env.spec.control_dt))
        with imageio.get_writer(args.video, fps=fps, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
        print(f"wrote {args.video} ({len(frames)} frames at {fps} Hz)")
    env.close()
    succ = result["success_rate"]
    who = "zero action" if args.policy == "zero" else f"{info['algo']}, {Path(info['checkpoint']).name}, step {info['step']}"
    print(f"{info['task']} ({who}): "
          f"{result['episodes']} episodes, mean return {result['mean_return']:.2f} +- {result['std_return']:.2f}, "
          f"mean length {result['mean_length']:.1f}" + ("" if succ != succ else f", success rate {succ:.0%}")
          + (f", velocity tracking error {result['velocity_tracking_error']:.3f} m/s"
             if "velocity_tracking_error" in result else ""))
    return 0
