"""`roboreal offline`: offline RL (IQL) from datasets, into a run directory that play/export take.

    roboreal offline pick.hdf5 [more.hdf5 ...] --task panda-pick --algo iql [--run-dir runs/pick_iql]
        [--steps 100000] [--eval-episodes 64] [expectile=0.7 temperature=3.0 hidden=[256,256] env.<field>=...]
    roboreal offline pick.hdf5 --steps 10000 online_steps=5000     # then fine-tune online in the simulated task

Overrides: `IQLConfig` fields ``key=value`` and ``env.<field>=value`` (task config), every
key validated. IQL needs a reward per step: unknown (NaN) rewards are computed from the
task where its observations allow (goal tasks), otherwise the file is refused with the count.
"""

from __future__ import annotations

import argparse
import time

from roboreal.config import ConfigError

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
    from roboreal.agents.iql import IQLConfig, run_offline
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
