"""`roboreal collect`, `roboreal bc` and `roboreal dagger` (`roboreal data` is `roboreal.data.cli`).

    roboreal collect panda-reach --expert scripted --episodes 32 --out reach.hdf5 [--num-envs 8] [--seed 0] [key=value]
    roboreal collect panda-pick --expert runs/pick_sac --episodes 64 --out pick.hdf5
    roboreal bc reach.hdf5 [--task panda-reach] [--run-dir runs/reach_bc] [hidden=[128,128] relabel_fraction=0.5]
    roboreal dagger --task panda-reach --expert scripted --rounds 4 [--run-dir runs/reach_dagger] [key=value]
    roboreal dagger --task panda-reach --expert human --dataset robot_session1.hdf5 --dataset demos.hdf5
    roboreal dagger --task panda-pick-vision --expert scripted --rounds 4      # from pixels (bc.images=auto)
    roboreal dagger --task panda-pick-vision --expert runs/pick_teacher --expert-obs-group critic

Overrides: ``collect`` takes task config fields (``episode_length_s=3``); ``bc`` takes
`BCConfig` fields and ``env.<field>=``; ``dagger`` takes `DAggerConfig` fields,
``bc.<field>=`` and ``env.<field>=``. Every key is validated (a misspelled one names
itself).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from roboreal.config import ConfigError, parse_override


def _intermixed(p: argparse.ArgumentParser) -> None:
    """Let options and ``key=value`` positionals mix (see roboreal.agents.cli)."""
    from roboreal.cli import IntermixedParser

    p.__class__ = IntermixedParser


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="record expert demonstrations into an HDF5 dataset",
                       description="Record expert demonstrations. EXPERT: scripted | RUN_DIR | checkpoint.pt | BUNDLE_DIR.")
    p.add_argument("task")
    p.add_argument("--expert", default="scripted", help="scripted | RUN_DIR | checkpoint .pt | bundle directory")
    p.add_argument("--expert-obs-group", default=None, help="observation group a policy expert reads (e.g. critic)")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--out", required=True, help="dataset file (.hdf5)")
    p.add_argument("--append", action="store_true", help="add to an existing file instead of replacing it")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.0, help="DART: std of noise on executed actions (labels clean)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("overrides", nargs="*", help="task config overrides key=value")
    p.set_defaults(handler=cmd_collect)
    _intermixed(p)

    p = sub.add_parser("bc", help="behaviour cloning (goal-conditioned, with relabeling) from datasets; writes a run",
                       description="Behaviour cloning. Overrides: BCConfig fields key=value, env.<field>=value.")
    p.add_argument("datasets", nargs="+", metavar="DATASET|key=value", help="dataset files, then overrides")
    p.add_argument("--task", default=None, help="task (default: the dataset's)")
    p.add_argument("--run-dir", default=None, help="output (default: runs/<task>_bc_<time>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=64, help="evaluate the policy in simulation (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small MLPs: 1 is fastest)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_bc)
    _intermixed(p)

    p = sub.add_parser("dagger", help="DAgger / HG-DAgger with an expert policy, a script, or human-labelled datasets",
                       description="DAgger. Overrides: DAggerConfig fields key=value, bc.<field>=value, env.<field>=value.")
    p.add_argument("--task", required=True)
    p.add_argument("--expert", default="scripted", help="scripted | RUN_DIR | checkpoint .pt | BUNDLE_DIR | human")
    p.add_argument("--expert-obs-group", default=None, help="observation group a policy expert reads (e.g. critic)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--dataset", action="append", default=[], help="dataset(s) to aggregate (robot/human data)")
    p.add_argument("--run-dir", default=None, help="output (default: runs/<task>_dagger_<time>)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value, bc.key=value, env.key=value")
    p.set_defaults(handler=cmd_dagger)
    _intermixed(p)


def _split_overrides(items: list[str]) -> tuple[list[str], list[tuple[str, object]]]:
    """Dataset files and ``key=value`` overrides, in any order."""
    files, overrides = [], []
    for item in items:
        if "=" in item and not Path(item).exists():
            overrides.append(parse_override(item))
        else:
            files.append(item)
    return files, overrides


def _apply(cls, items: list[tuple[str, object]], prefix: str = ""):
    from roboreal.config import apply_overrides

    try:
        return apply_overrides(cls, cls(), dict(items))
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e.field}", str(e).split(": ", 1)[-1]) from None


def _log_row(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    console = Console()

    def log(row: dict) -> None:
        console.print("  ".join(f"[bold]{k}[/] {v:.4g}" if isinstance(v, float) else f"[bold]{k}[/] {v}"
                                for k, v in row.items()))

    return log


def _threads(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def cmd_collect(args: argparse.Namespace) -> int:
    _threads(args)
    from roboreal.agents.dagger import collect
    from roboreal.envs.registry import task_config

    overrides = dict(parse_override(o) for o in args.overrides)
    task_config(args.task, overrides)  # validate before anything is written
    if args.episodes < 1:
        raise ConfigError("episodes", f"must be >= 1, got {args.episodes}")
    if args.expert == "human":
        raise ConfigError("expert", "a human expert records on the robot (sim2real); collect needs scripted, a run or a bundle")
    stats = collect(args.task, args.expert, args.episodes, args.out, num_envs=args.num_envs, seed=args.seed,
                    env_overrides=overrides, dart_noise=args.noise, mode="a" if args.append else "w",
                    expert_obs_group=args.expert_obs_group)
    succ = stats["success_rate"]
    print(f"wrote {stats['episodes']} episodes ({stats['steps']} steps) of {args.task} to {args.out} in "
          f"{stats['wall_time_s']:.1f} s; expert success rate "
          + ("-" if succ != succ else f"{succ:.0%}"))
    return 0


def dataset_command_inputs(args: argparse.Namespace) -> tuple[list[str], dict, list[tuple[str, object]], str]:
    """What a command that learns from dataset files (``bc``, ``offline``) was given: the files
    (each must exist), ``env.*`` overrides, its own ``key=value`` overrides, and the task
    (``--task``, else the first file's)."""
    files, items = _split_overrides(args.datasets)
    if not files:
        raise ConfigError("datasets", "give at least one dataset file")
    for f in files:
        if not Path(f).is_file():
            raise ConfigError("datasets", f"no such dataset file: {f}")
    env_over = {k[4:]: v for k, v in items if k.startswith("env.")}
    own = [(k, v) for k, v in items if not k.startswith("env.")]
    task = args.task
    if task is None:
        from roboreal.data import DatasetReader

        with DatasetReader(files[0]) as r:
            task = r.task
    if not task:
        raise ConfigError("task", "the dataset names no task; pass --task")
    return files, env_over, own, task


def cmd_bc(args: argparse.Namespace) -> int:
    _threads(args)
    from roboreal.agents.bc import BCConfig, run_bc

    files, env_over, own, task = dataset_command_inputs(args)
    cfg = _apply(BCConfig, own)
    run_dir = args.run_dir or f"runs/{task}_bc_{time.strftime('%Y%m%d-%H%M%S')}"
    from roboreal.data import DatasetError

    try:
        res = run_bc(files, task, cfg, run_dir, seed=args.seed, env_overrides=env_over,
                     eval_episodes=args.eval_episodes, log=_log_row(args.quiet))
    except DatasetError as e:  # e.g. no labelled step: a message, not a traceback
        raise ConfigError("datasets", str(e)) from None
    succ = res.get("success_rate")
    cameras = f" (+ camera images {', '.join(res['image_inputs'])})" if res.get("image_inputs") else ""
    print(f"{run_dir}: BC{cameras} on {res['labels']} expert labels ({res['train_labels']} train / {res['val_labels']} val; "
          f"{res['train_episodes']} train / {res['val_episodes']} val episodes), "
          f"{res['epochs']} epochs (best {res['best_epoch']}, val loss {res['best_val_loss']:.4g}) in "
          f"{res['wall_time_s']:.1f} s" + ("" if succ is None or succ != succ else
                                           f"; success rate {succ:.0%} over {res['eval_episodes']} episodes"))
    return 0


def cmd_dagger(args: argparse.Namespace) -> int:
    _threads(args)
    from roboreal.agents.bc import BCConfig
    from roboreal.agents.dagger import DAgger, DAggerConfig
    from roboreal.agents.experts import make_expert
    from roboreal.config import apply_overrides, to_dict
    from roboreal.envs.registry import task_config

    items = [parse_override(o) for o in args.overrides]
    env_over = {k[4:]: v for k, v in items if k.startswith("env.")}
    task_config(args.task, env_over)
    bc = _apply(BCConfig, [(k[3:], v) for k, v in items if k.startswith("bc.")], prefix="bc.")
    own = [(k, v) for k, v in items if not (k.startswith("env.") or k.startswith("bc."))]
    if args.rounds is not None:
        own.append(("rounds", args.rounds))
    cfg = apply_overrides(DAggerConfig, {**to_dict(DAggerConfig()), "bc": to_dict(bc)}, dict(own))
    for f in args.dataset:
        if not Path(f).is_file():
            raise ConfigError("dataset", f"no such dataset file: {f}")
    run_dir = args.run_dir or f"runs/{args.task}_dagger_{time.strftime('%Y%m%d-%H%M%S')}"
    if args.expert == "human":
        expert = None
    else:
        def expert(env):  # built on the DAgger's own env (scripted experts keep per-world kinematics)
            return make_expert(args.expert, env, obs_group=args.expert_obs_group)
    from roboreal.data import DatasetError

    try:
        dagger = DAgger(args.task, expert, cfg, run_dir, seed=args.seed, env_overrides=env_over,
                        datasets=args.dataset, log=_log_row(args.quiet), expert_name=args.expert)
        history = dagger.run()
    except DatasetError as e:  # e.g. a session without a labelled step: a message, not a traceback
        raise ConfigError("dataset", str(e)) from None
    last = history[-1]
    print(f"{run_dir}: {len(history)} rounds, {last['labels']} expert labels ({last['train_labels']} train / "
          f"{last['val_labels']} val), final success rate "
          + ("-" if last["success_rate"] != last["success_rate"] else f"{last['success_rate']:.0%}")
          + (f", velocity tracking error {last['velocity_tracking_error']:.3f} m/s"
             if "velocity_tracking_error" in last else ""))
    return 0
