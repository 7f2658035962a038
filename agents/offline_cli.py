"""`roboreal offline`: offline RL (IQL) from datasets, into a run directory that play/export take.

    roboreal offline pick.hdf5 [more.hdf5 ...] --task panda-pick --algo iql [--run-dir runs/pick_iql]
        [--steps 100000] [--eval-episodes 64] [expectile=0.7 temperature=3.0 hidden=[256,256] env.<field>=...]
    roboreal offline pick.hdf5 --steps 10000 online_steps=5000     # then fine-tune online in the simulated task

Overrides: `IQLConfig` fields ``key=value`` and ``env.<field>=value`` (task config), every
key validated. IQL needs a reward per step: unknown (NaN) rewards are computed from the
task where its observations allow (goal tasks), otherwise the file is refused with the count.

`run_offline` is the command's work as a function (the run directory it writes). torch and
the algorithm are imported inside the functions: the CLI builds its parser without them.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from roboreal.config import ConfigError, to_dict

if TYPE_CHECKING:
    from roboreal.agents.iql import IQL, IQLConfig

ALGORITHMS = ("iql",)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from roboreal.agents.imitation_cli import _intermixed

    p = sub.add_parser("offline", help="offline RL (Implicit Q-Learning) from datasets with rewards; writes a run",
                       description="Offline RL. Overrides: IQLConfig fields key=value, env.<field>=value.")
    p.add_argument("datasets", nargs="+", metavar="DATASET|key=value", help="dataset files, then overrides")
    p.add_argument("--task", default=None, help="task (default: the first dataset's)")
    p.add_argument("--algo", choices=ALGORITHMS, default="iql")
    p.add_argument("--run-dir", default=None, help="output (default: runs/<task>_<algo>_<time>)")
    p.add_argument("--steps", type=int, default=None, help="gradient steps (default: IQLConfig.steps, the paper's 1M)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-episodes", type=int, default=64, help="deterministic evaluation episodes (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (small MLPs: 1 is fastest)")
    p.add_argument("--quiet", action="store_true", help="no per-row log")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.set_defaults(handler=cmd_offline)
    _intermixed(p)


def cmd_offline(args: argparse.Namespace) -> int:
    from roboreal.agents.imitation_cli import _apply, _log_row, _threads, dataset_command_inputs
    from roboreal.agents.iql import IQLConfig
    from roboreal.data import DatasetError

    _threads(args)
    files, env_over, own, task = dataset_command_inputs(args)
    if args.steps is not None:
        own.append(("steps", args.steps))
    cfg = _apply(IQLConfig, own)
    run_dir = args.run_dir or f"runs/{task}_{args.algo}_{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        res = run_offline(files, task, cfg, run_dir, seed=args.seed, env_overrides=env_over,
                          eval_episodes=args.eval_episodes, log=_log_row(args.quiet), progress=not args.no_progress)
    except DatasetError as e:  # e.g. unknown rewards: a message, not a traceback
        raise ConfigError("datasets", str(e)) from None
    succ = res.get("success_rate")
    computed = f" ({res['computed_rewards']} rewards computed from the task)" if res["computed_rewards"] else ""
    known = lambda v: v is not None and v == v  # noqa: E731
    online = ""
    if res["online_env_steps"]:
        off = res["offline_success_rate"]
        online = f", then {res['online_env_steps']} online transitions" + \
            (f" (success rate {off:.0%} after the offline phase)" if known(off) else "")
    print(f"{run_dir}: IQL on {res['transitions']} transitions of {res['episodes']} episodes{computed}{online}, "
          f"{res['updates']} updates in {res['wall_time_s']:.1f} s"
          + (f"; final success rate {succ:.0%} over {res['eval_episodes']} episodes" if known(succ) else ""))
    return 0


def run_offline(datasets: list[str | Path], task: str | None, cfg: IQLConfig, run_dir: str | Path, seed: int = 0,
                env_overrides: dict | None = None, eval_episodes: int = 64, eval_seed: int = 12345,
                log: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Train IQL on dataset files; write config.yaml, checkpoints/{best,last}.pt, progress.csv,
    metrics.json and TensorBoard scalars (``tb/``) into `run_dir`.

    ``best.pt`` is the policy of the best periodic evaluation (success rate, then return) --
    a choice made with the simulator, which an offline setting on a robot does not have;
    ``last.pt`` is the final policy. Without evaluation both hold the final policy. With
    ``cfg.online_steps`` the offline phase is followed by online fine-tuning (`finetune_iql`) in
    the simulated task; metrics.json then has the offline phase's final scores beside the final ones."""
    from roboreal.agents.bc import evaluate_policy, plot_curves, run_meta, save_checkpoint, write_metrics
    from roboreal.agents.run_config import write_run_config
    from roboreal.agents.run_logs import write_progress_csv
    from roboreal.agents.iql import finetune_iql, train_iql
    from roboreal.agents.offline_data import goal_reward_fn, load_offline_data
    from roboreal.data import DatasetError, DatasetReader, check_compatible
    from roboreal.envs import make
    from roboreal.envs.registry import recorded_env_kwargs

    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "best.pt").exists():
        raise ConfigError("run_dir", f"{run_dir} already holds a run; choose another --run-dir")
    with DatasetReader(datasets[0]) as r:
        file_task, file_env = r.task, r.env_kwargs
    task = task or file_task
    if not task:
        raise ConfigError("task", "the dataset names no task; pass --task")
    # a dataset recorded for another task keeps only the settings this task has; check_compatible names the mismatch
    env_overrides = {**recorded_env_kwargs({"task": file_task, "env_kwargs": file_env}, task), **(env_overrides or {})}
    env = make(task, num_envs=1, seed=seed, **env_overrides)
    try:
        if cfg.obs_group not in env.spec.observation_sizes:
            raise ConfigError("obs_group", f"task {task} has no observation group {cfg.obs_group!r}")
        for d in datasets:
            with DatasetReader(d) as r:
                check_compatible(dict(r.meta), env, cfg.obs_group)
        reward_fn, why = goal_reward_fn(env)
        data = load_offline_data(datasets, cfg.obs_group, cfg.rewards, reward_fn, why)
        control_dt = float(env.spec.control_dt)
    finally:
        env.close()
    if data.obs.shape[1] != env.spec.observation_sizes[cfg.obs_group]:
        raise DatasetError(f"dataset observation group {cfg.obs_group!r} has size {data.obs.shape[1]}, task {task} "
                           f"has {env.spec.observation_sizes[cfg.obs_group]}")
    composition = {"steps": len(data), "episodes": data.num_episodes,
                   "interventions": int(data.intervention.sum()), "files": data.files,
                   "mean_reward": float(data.rewards.mean()), "terminals": int(data.terminals.sum())}
    config = {"task": task, "algo": "iql", "seed": seed, "num_envs": 1, "device": "cpu", "total_steps": cfg.steps,
              "env": env_overrides, "algorithm": to_dict(cfg), "datasets": [str(d) for d in datasets],
              "dataset": composition}
    write_run_config(run_dir, config)

    ckpt_dir = run_dir / "checkpoints"
    best = {"key": (-math.inf, -math.inf), "step": 0, "scores": {}}

    def meta(step: int) -> dict:
        return run_meta(task, "iql", env_overrides, seed, control_dt, step, updates=step, transitions=len(data))

    def evaluate(agent: IQL, step: int) -> dict:
        save_checkpoint(ckpt_dir / "last.pt", agent.policy_state(cfg.obs_group), meta(step), config,
                        {"iql": agent.networks_state()})
        if eval_episodes <= 0:
            return {}
        scores = evaluate_policy(agent.policy(), task, env_overrides, eval_episodes, eval_seed, cfg.obs_group)
        succ = scores["success_rate"]
        key = (succ if succ == succ else -math.inf, scores["mean_return"])
        if key > best["key"]:
            best.update(key=key, step=step, scores=scores)
            save_checkpoint(ckpt_dir / "best.pt", agent.policy_state(cfg.obs_group), meta(step), config)
        return {"eval/success_rate": succ, "eval/return": scores["mean_return"]}

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn(f"[bold]{task}[/] iql"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("updates  success [green]{task.fields[succ]}[/]"), TimeElapsedColumn())
        total_updates = cfg.steps + math.ceil(cfg.online_steps * cfg.online_utd)
        bar_id = bar.add_task("train", total=total_updates, succ="-")
        bar.start()

    def on_row(row: dict) -> None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, row["step"])
        if bar is not None and "eval/success_rate" in row and row["eval/success_rate"] == row["eval/success_rate"]:
            bar.update(bar_id, succ=f"{row['eval/success_rate']:.0%}")
        if log is not None:
            log(row)

    def on_progress(step: int) -> None:
        if bar is not None and (step % 100 == 0 or step == cfg.steps or step == total_updates):
            bar.update(bar_id, completed=step)

    t0 = time.perf_counter()
    offline_scores: dict = {}
    try:
        agent, rows = train_iql(data, cfg, seed=seed, log=on_row, evaluate=evaluate, on_progress=on_progress)
        offline_wall = time.perf_counter() - t0
        offline_scores = {k: v for k, v in (rows[-1] if rows else {}).items() if k.startswith("eval/")}
        if cfg.online_steps > 0:
            online_env = make(task, num_envs=cfg.online_envs, seed=seed + 1, **env_overrides)
            try:
                rows += finetune_iql(agent, data, online_env, cfg, seed=seed + 1, log=on_row, evaluate=evaluate,
                                     on_progress=on_progress)
            finally:
                online_env.close()
    finally:
        if bar is not None:
            bar.stop()
        writer.close()
    wall = time.perf_counter() - t0
    if not (ckpt_dir / "best.pt").exists():  # no evaluation: the final policy is the best we know
        save_checkpoint(ckpt_dir / "best.pt", agent.policy_state(cfg.obs_group), meta(cfg.steps), config)
    write_progress_csv(rows, run_dir / "progress.csv")
    plot_curves(run_dir, rows, "step", ["loss/q", "loss/value", "eval/success_rate"], f"{task} / iql")
    last = rows[-1] if rows else {}
    metrics = {"task": task, "algo": "iql", "seed": seed, "transitions": len(data), "episodes": data.num_episodes,
               "interventions": composition["interventions"], "updates": agent.updates,
               "wall_time_s": round(wall, 2), "eval_episodes": eval_episodes,
               "success_rate": last.get("eval/success_rate"), "mean_return": last.get("eval/return"),
               "best_step": best["step"], "best_success_rate": best["scores"].get("success_rate"),
               "computed_rewards": sum(f["computed_rewards"] for f in data.files.values()),
               "offline_updates": cfg.steps, "offline_wall_time_s": round(offline_wall, 2),
               "offline_success_rate": offline_scores.get("eval/success_rate"),
               "offline_mean_return": offline_scores.get("eval/return"),
               "online_env_steps": cfg.online_steps}
    write_metrics(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir), "history": rows}
