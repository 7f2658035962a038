"""Success against expert labels: BC vs DAgger at equal label budgets, over seeds.

    python -m roboreal.agents.imitation_benchmark --task panda-pick --seeds 0 1 2
    python -m roboreal.agents.imitation_benchmark --task panda-reach --init 4 --rounds 4 --per-round 2 \\
        --seeds 0 1 2 env.distance_threshold=0.02

For every seed: the scripted expert records ``init + rounds * per_round`` demonstrations;
BC trains on the first ``init``, ``init + per_round``, ... of them; DAgger starts from
the same ``init`` demonstrations and adds ``per_round`` labelled learner episodes per round
(beta-mixing schedule from `DAggerConfig`). Every policy is scored deterministically on
the same ``--eval-episodes`` fresh envs (seed 12345). Labels = expert-labelled steps
trained on (every step of a demonstration or of a DAgger rollout). Figures are printed
side by side and written to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def run(task: str, seeds: list[int], init: int, rounds: int, per_round: int, bc_cfg, dagger_overrides: dict,
        env_overrides: dict, eval_episodes: int, log=print) -> dict:
    from roboreal.agents.bc import evaluate_policy, train_bc
    from roboreal.agents.dagger import DAgger, DAggerConfig, collect
    from roboreal.agents.experts import ScriptedPandaExpert
    from roboreal.config import apply_overrides, to_dict
    from roboreal.data import load_transitions

    results = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            demos = Path(tmp) / "demos.hdf5"
            total = init + rounds * per_round
            collect(task, "scripted", total, demos, num_envs=min(8, total), seed=seed, env_overrides=env_overrides)
            bc_curve = []
            for k in range(rounds + 1):
                n = init + k * per_round
                train, val, _ = load_transitions(demos, bc_cfg.val_fraction, seed, max_episodes=n)
                trainer, _ = train_bc(train, val, bc_cfg, seed=seed)
                score = evaluate_policy(trainer.policy(), task, env_overrides, eval_episodes)
                labels = train.num_labels + (val.num_labels if val else 0)
                bc_curve.append({"episodes": n, "labels": labels, "success_rate": score["success_rate"]})
                log(f"seed {seed} BC     {n:4d} demos {labels:6d} labels: success {score['success_rate']:.2f}")
            t_bc = time.perf_counter() - t0
            cfg = apply_overrides(DAggerConfig, {**to_dict(DAggerConfig()), "bc": to_dict(bc_cfg)},
                                  {"rounds": rounds, "initial_episodes": init, "episodes_per_round": per_round,
                                   "num_envs": max(1, min(8, per_round)), "eval_episodes": eval_episodes,
                                   **dagger_overrides})
            t1 = time.perf_counter()
            history = DAgger(task, lambda env: ScriptedPandaExpert(env), cfg, Path(tmp) / "dagger", seed=seed,
                             env_overrides=env_overrides).run()
            dagger_curve = [{"round": h["round"], "beta": h["beta"], "labels": h["labels"],
                             "success_rate": h["success_rate"]} for h in history]
            for h in dagger_curve:
                log(f"seed {seed} DAgger round {h['round']} beta {h['beta']:.3f} {h['labels']:6d} labels: "
                    f"success {h['success_rate']:.2f}")
            results.append({"seed": seed, "bc": bc_curve, "dagger": dagger_curve, "bc_time_s": round(t_bc, 1),
                            "dagger_time_s": round(time.perf_counter() - t1, 1)})
    return {"task": task, "init": init, "rounds": rounds, "per_round": per_round, "env": env_overrides,
            "bc_config": to_dict(bc_cfg), "dagger_overrides": dagger_overrides, "eval_episodes": eval_episodes,
            "results": results}


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    res = report["results"]
    table = Table(title=f"{report['task']}: success vs expert labels (BC | DAgger), "
                        f"{report['eval_episodes']} eval episodes per policy")
    table.add_column("labels", justify="right")
    for r in res:
        table.add_column(f"seed {r['seed']} BC", justify="right")
        table.add_column(f"seed {r['seed']} DAgger", justify="right")
    table.add_column("mean BC", justify="right")
    table.add_column("mean DAgger", justify="right")
    table.add_column("DAgger - BC", justify="right")
    for k in range(report["rounds"] + 1):
        bc = [r["bc"][k]["success_rate"] for r in res]
        dg = [r["dagger"][k]["success_rate"] for r in res]
        row = [str(res[0]["bc"][k]["labels"])]
        for a, b in zip(bc, dg):
            row += [f"{a:.2f}", f"{b:.2f}"]
        row += [f"{np.mean(bc):.2f}", f"{np.mean(dg):.2f}", f"{np.mean(dg) - np.mean(bc):+.2f}"]
        table.add_row(*row)
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    from roboreal.agents.bc import BCConfig
    from roboreal.config import apply_overrides, parse_override, to_dict

    p = argparse.ArgumentParser(prog="python -m roboreal.agents.imitation_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="panda-pick")
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="seeds (key=value overrides may follow)")
    p.add_argument("--init", type=int, default=20, help="expert demonstrations before DAgger's first round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=10, help="episodes labelled per DAgger round")
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON report (default: imitation_<task>.json)")
    p.add_argument("overrides", nargs="*", help="bc.<field>=v (BCConfig), dagger.<field>=v, env.<field>=v")
    args = p.parse_intermixed_args(argv)
    torch.set_num_threads(args.threads)
    extra = [x for x in args.seeds if "=" in x]  # nargs="+" swallows overrides written after the seeds
    args.seeds = [int(x) for x in args.seeds if "=" not in x]
    items = [parse_override(o) for o in list(args.overrides) + extra]
    bc_items = {k[3:]: v for k, v in items if k.startswith("bc.")}
    base = {"hidden": [256, 256], "max_epochs": 40, "updates_per_epoch": 50, "val_fraction": 0.0}
    bc_cfg = apply_overrides(BCConfig, {**to_dict(BCConfig()), **base}, bc_items)
    dagger_items = {k[7:]: v for k, v in items if k.startswith("dagger.")}
    env_items = {k[4:]: v for k, v in items if k.startswith("env.")}
    unknown = [k for k, _ in items if not k.startswith(("bc.", "dagger.", "env."))]
    if unknown:
        p.error(f"override {unknown[0]!r}: use bc.<field>=, dagger.<field>= or env.<field>=")
    t0 = time.perf_counter()
    report = run(args.task, args.seeds, args.init, args.rounds, args.per_round, bc_cfg, dagger_items, env_items,
                 args.eval_episodes)
    report["wall_time_s"] = round(time.perf_counter() - t0, 1)
    print_table(report)
    out = args.out or f"imitation_{args.task}.json"
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {out} ({report['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
