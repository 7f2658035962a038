"""roboreal PPO and SAC on the standard Gymnasium MuJoCo tasks, beside published results.

Per env (``HalfCheetah-v5``, ``Hopper-v5``, ``Walker2d-v5``, ``Ant-v5``, trained as the
roboreal tasks ``gym:<EnvId>``) and algorithm (``ppo``, ``sac``), N seeds (0..N-1) train
from scratch through roboreal's own runner (`agents.run_config.resolve_config` + ``train``),
with the task's section of ``agents/configs/<algo>.yaml`` (CleanRL's published MuJoCo
settings, see the comments there) or, for an env without one, the algorithm's
``defaults``; every row says which. Budgets are those CleanRL and the SB3 RL Zoo publish:
PPO 1M env steps, SAC 1M (``--sac-steps``; 300k is the budget a 2-core CPU affords, the
published figures stay those at 1M).

Scores, per run:

- **final return**: a deterministic evaluation of ``checkpoints/last.pt`` (the policy at the
  end of training; `agents.policy.load_policy` + ``evaluate``) over 10 episodes, one eval
  env each, seeded ``seed + 20_000`` -- episodes the runner never evaluated on (its own
  evaluations use ``seed + 10_000``);
- **best eval**: the runner's best periodic deterministic evaluation (``metrics.json``
  ``best_eval``: 10 episodes every ``runner.eval_interval`` iterations and at the end; the
  policy kept as ``best.pt``). Selecting the maximum over ~50-100 evaluations makes it an
  optimistic figure, as is the TD3 paper's "max average return";
- **wall-clock**: the runner's training time (``metrics.json`` ``wall_time_s``: the loop with
  its periodic evaluations and checkpoints, summed over resumes) and env steps/s
  (``global_step / wall_time_s``) on this machine, 1 torch thread per run (``--threads``).

The table shows mean +- std over seeds. Published figures (what each measures differs; none
is on the v5 envs, which differ from v4 by Gymnasium's fixes, e.g. Walker2d's foot friction,
and by Ant's default observation: 105 values in v5, contact forces included, 27 in v4):

[C] CleanRL docs (https://docs.cleanrl.dev/rl-algorithms/ppo/ and /sac/): mean +- std over
    seeds of the *training* episodic return at the end of training (stochastic policy);
    PPO ``ppo_continuous_action`` on v4 envs, 1M steps (tag pr-424); SAC
    ``sac_continuous_action`` on HalfCheetah/Walker2d/Hopper-v2, 1M steps. No Ant in either.
[Z] SB3 RL Zoo ``benchmark.md`` (DLR-RM/rl-baselines3-zoo): *one* trained agent per entry,
    deterministic evaluation over ~150k steps, v3 envs, 1M steps, the zoo's tuned
    hyper-parameters (PPO with VecNormalize). mean +- std over the evaluation episodes.
[S] Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv 1812.05905),
    deterministic evaluation at 1M steps, read off the paper's curves as quoted in CleanRL's
    SAC docs (~ values); no Ant figure there.
[T] Fujimoto et al. 2018 (TD3), Table 1: *max* average return over 10 trials within 1M steps,
    gym v1 envs; their PPO runs (for PPO rows) and TD3 itself (for SAC rows: the off-policy
    reference of that table; its SAC column predates the automatic entropy tuning).

Resume: every run has its own directory under ``--runs-dir``
(``<env>-<algo>-<steps>-seed<N>``). A finished run (``metrics.json`` at its full step
count) is not trained again; an interrupted one (``checkpoints/last.pt`` short of the
budget) continues from its last checkpoint with `agents.runner.resume` (networks,
optimizers, replay buffer and RNGs restored; Gymnasium envs cannot save their simulation
state, so the runner re-seeds them and a resumed run is not bit-identical to an
uninterrupted one); a directory without a checkpoint starts over. Checkpoints come every
``runner.save_interval`` iterations (~100k steps PPO, 50k SAC), so an interruption costs at
most that much. So a campaign can be stopped at any time and the same command continues it;
a run whose stored config.yaml differs from today's config is reported with a warning. The
last.pt evaluation is cached in ``<run>/final_eval_last.json``.

Run directories hold replay buffers and do not travel; results files do. ``--first-seed K``
trains seeds K..N-1 only, and ``--merge FILE ...`` adds the rows of earlier results files
(seeds trained on another day or machine) to the table and the output, each row naming the
file it came from and each file's commands kept; ``--seeds 0`` trains nothing and prints the
merged table.

    python benchmarks/standard_tasks.py                       # the full campaign (many hours)
    python benchmarks/standard_tasks.py --sac-steps 300000    # the CPU-feasible SAC budget
    python benchmarks/standard_tasks.py --envs Hopper-v5 --algos sac --seeds 5
    python benchmarks/standard_tasks.py --algos sac --sac-steps 300000 --first-seed 1 --seeds 2 \
        --merge docs/standard_tasks_sac.json --out docs/standard_tasks_sac.json   # add seed 1
    python benchmarks/standard_tasks.py --quick --envs Hopper-v5 --algos ppo sac --seeds 1
                                       # a few thousand steps per run: checks the code and
                                       # estimates the full campaign from measured steps/s
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
ALGOS = ("ppo", "sac")
FINAL_EVAL_EPISODES = 10
FINAL_EVAL_SEED_OFFSET = 20_000  # the runner's own evaluations use seed + 10_000
CPU_SAC_STEPS = 300_000

# --quick: a few thousand steps per run, every code path (training, learning updates, the
# runner's evaluations and checkpoints, resume bookkeeping, the last.pt evaluation).
QUICK_STEPS = {"ppo": 4096, "sac": 3000}
QUICK_OVERRIDES = {
    "ppo": {"runner.eval_interval": 1},
    "sac": {"runner.eval_interval": 1, "learning_starts": 1000},
}

SOURCES = {
    "C": "CleanRL docs, https://docs.cleanrl.dev/rl-algorithms/ppo/ (ppo_continuous_action, MuJoCo v4, tag pr-424) "
         "and https://docs.cleanrl.dev/rl-algorithms/sac/ (sac_continuous_action, MuJoCo v2): training episodic "
         "return at 1M steps, mean +- std over seeds",
    "Z": "SB3 RL Zoo benchmark.md (github.com/DLR-RM/rl-baselines3-zoo): one tuned agent, v3 envs, 1M steps, "
         "deterministic evaluation, mean +- std over episodes",
    "S": "Haarnoja et al. 2018, Soft Actor-Critic Algorithms and Applications (arXiv 1812.05905), deterministic "
         "evaluation at 1M steps, read off the curves (as quoted by CleanRL's SAC docs)",
    "T": "Fujimoto et al. 2018 (TD3, arXiv 1802.09477) Table 1: max average return over 10 trials within 1M steps, "
         "gym v1 envs; PPO rows: their PPO runs, SAC rows: TD3",
}

# (env, algo) -> [(source key, figure)]; "n/a" where the source has no such entry.
PUBLISHED: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("HalfCheetah-v5", "ppo"): [("C", "1442.6 ± 46.0"), ("Z", "5819.1 ± 663.5"), ("T", "1795.4")],
    ("Hopper-v5", "ppo"): [("C", "2382.9 ± 271.7"), ("Z", "2410.4 ± 10.0"), ("T", "2164.7")],
    ("Walker2d-v5", "ppo"): [("C", "2288.0 ± 571.8"), ("Z", "3478.8 ± 821.7"), ("T", "3317.7")],
    ("Ant-v5", "ppo"): [("C", "n/a"), ("Z", "1327.2 ± 451.6"), ("T", "1083.2")],
    ("HalfCheetah-v5", "sac"): [("C", "9634.9 ± 1423.7"), ("Z", "9535.5 ± 100.5"), ("S", "~11250"),
                                ("T", "9637.0 ± 859.1")],
    ("Hopper-v5", "sac"): [("C", "2310.5 ± 342.8"), ("Z", "2325.5 ± 1129.7"), ("S", "~3250"),
                           ("T", "3564.1 ± 114.7")],
    ("Walker2d-v5", "sac"): [("C", "3591.5 ± 911.3"), ("Z", "3863.2 ± 254.3"), ("S", "~4800"),
                             ("T", "4682.8 ± 539.6")],
    ("Ant-v5", "sac"): [("C", "n/a"), ("Z", "4615.8 ± 1354.1"), ("S", "n/a"), ("T", "4372.4 ± 1000.3")],
}


# ----------------------------------------------------------------------------------------------
# one run

def steps_label(steps: int) -> str:
    if steps % 1_000_000 == 0:
        return f"{steps // 1_000_000}M"
    if steps % 1000 == 0:
        return f"{steps // 1000}k"
    return str(steps)


def run_config(env: str, algo: str, seed: int, steps: int, threads: int, quick: bool):
    """(TrainConfig, the config's description) for one run."""
    from roboreal.agents.run_config import preset_section, resolve_config

    task = f"gym:{env}"
    overrides: dict[str, Any] = {"runner.num_threads": threads}
    if quick:
        overrides.update(QUICK_OVERRIDES[algo])
    cfg = resolve_config(task, algo, overrides, seed=seed, total_steps=steps)
    section, _ = preset_section(task, algo)
    source = f"{algo}.yaml tasks.{section}" if section else f"{algo}.yaml defaults (no {task} section)"
    if quick:
        source += " + quick: " + ", ".join(f"{k}={v}" for k, v in QUICK_OVERRIDES[algo].items())
    return cfg, source


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(run_dir: Path, cfg) -> list[str]:
    """Keys where the run directory's config.yaml differs from the config this invocation resolved."""
    from roboreal.agents.runner import load_run_config
    from roboreal.config import to_dict

    stored, wanted = _flat(to_dict(load_run_config(run_dir))), _flat(to_dict(cfg))
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))


def read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def evaluate_last(run_dir: Path, cfg, threads: int) -> dict:
    """Deterministic episodes of checkpoints/last.pt on fresh eval envs (cached per checkpoint step)."""
    import torch

    from roboreal.agents.policy import evaluate, load_policy
    from roboreal.envs import make

    cache = run_dir / "final_eval_last.json"
    policy, info = load_policy(run_dir, "last")
    if cache.is_file():
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("step") == info["step"] and cached.get("episodes") == FINAL_EVAL_EPISODES:
            return cached
    torch.set_num_threads(threads)
    seed = cfg.seed + FINAL_EVAL_SEED_OFFSET
    t0 = time.perf_counter()
    env = make(cfg.task, num_envs=FINAL_EVAL_EPISODES, device="cpu", seed=seed, **cfg.env)
    try:
        res = evaluate(policy, env, obs_group=info["obs_group"], seed=seed)
    finally:
        env.close()
    out = {"checkpoint": info["checkpoint"], "step": info["step"], "seed": seed, "episodes": res["episodes"],
           "return": res["mean_return"], "return_std": res["std_return"], "length": res["mean_length"],
           "returns": res["returns"], "wall_s": round(time.perf_counter() - t0, 2)}
    with open(cache, "w") as f:
        json.dump(out, f, indent=2)
    return out


def run_one(env: str, algo: str, seed: int, steps: int, runs_dir: Path, threads: int, quick: bool) -> dict:
    """Train (or resume, or reuse) one run and score it."""
    from roboreal.agents.runner import resume, train

    cfg, source = run_config(env, algo, seed, steps, threads, quick)
    run_dir = runs_dir / f"{env}-{algo}-{steps_label(steps)}-seed{seed}"
    metrics = read_metrics(run_dir)
    has_ckpt = (run_dir / "checkpoints" / "last.pt").is_file()
    status = "trained"
    t0 = time.perf_counter()
    if metrics is not None and has_ckpt and metrics.get("global_step", 0) >= steps:
        status = "reused (finished earlier)"
    elif has_ckpt:
        status = f"resumed at step {metrics.get('global_step') if metrics else '?'}"
        print(f"  {run_dir.name}: {status}", flush=True)
        resume(run_dir, progress=False)
    else:
        if run_dir.exists():  # a run killed before its first checkpoint: start it over
            shutil.rmtree(run_dir)
        train(cfg, run_dir, progress=False)
    process_wall = time.perf_counter() - t0 if status == "trained" else None
    diffs = config_differences(run_dir, cfg)
    if diffs:
        print(f"  WARNING {run_dir.name}: its config.yaml differs from the current config in {', '.join(diffs)}; "
              "its figures are those of the stored config", flush=True)
    metrics = read_metrics(run_dir) or {}
    final = evaluate_last(run_dir, cfg, threads)
    best = metrics.get("best_eval") or {}
    return {
        "env": env, "algo": algo, "seed": seed, "steps": steps, "run_dir": str(run_dir), "status": status,
        "config": source, "config_differs": diffs,
        "final_return": final["return"], "final_return_std": final["return_std"], "final_length": final["length"],
        "final_eval": final,
        "best_eval_return": best.get("return"), "best_eval_step": best.get("step"),
        "runner_final_eval_return": (metrics.get("final_eval") or {}).get("return"),
        "train_return": metrics.get("final_return"),
        "global_step": metrics.get("global_step"), "wall_time_s": metrics.get("wall_time_s"),
        "eval_time_s": metrics.get("eval_time_s"), "steps_per_s": metrics.get("steps_per_s"),
        "process_wall_s": None if process_wall is None else round(process_wall, 2),
        "rates": measured_rates(run_dir, cfg, metrics),
    }


# ----------------------------------------------------------------------------------------------
# duration estimate

def measured_rates(run_dir: Path, cfg, metrics: dict) -> dict:
    """Throughput figures of a run for extrapolating: env steps/s of iterations before learning
    starts (SAC's uniform-random phase) and with learning, and seconds per evaluation of full
    1000-step episodes (scaled from the run's last evaluation)."""
    rows = []
    path = run_dir / "progress.csv"
    if path.is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
    starts = int((cfg.algorithm or {}).get("learning_starts", 0)) if cfg.algo == "sac" else 0
    prev, random_sps, learn_sps = 0, [], []
    for r in rows:
        step, sps = int(float(r["step"])), float(r["perf/sps"])
        if step <= starts:
            random_sps.append(sps)  # the whole iteration before learning starts
        elif prev >= starts:
            learn_sps.append(sps)  # the whole iteration with learning (one that straddles is left out)
        prev = step
    ev = metrics.get("final_eval") or {}
    eval_full_s = None
    if ev.get("wall_s") and ev.get("length"):
        eval_full_s = float(ev["wall_s"]) * 1000.0 / max(float(ev["length"]), 1.0)
    med = (lambda xs: statistics.median(xs) if xs else None)
    return {"random_sps": med(random_sps), "learn_sps": med(learn_sps), "eval_full_s": eval_full_s}


def estimate_run_s(env: str, algo: str, steps: int, threads: int, rates: dict) -> float | None:
    """Seconds for one full run with the full (non-quick) config, from measured rates."""
    cfg, _ = run_config(env, algo, 0, steps, threads, quick=False)
    if not rates.get("learn_sps"):
        return None
    starts = min(int(cfg.algorithm.get("learning_starts", 0)), steps) if algo == "sac" else 0
    random_sps = rates.get("random_sps") or rates["learn_sps"]
    per_iter = (cfg.num_envs * cfg.algorithm["num_steps"] if algo == "ppo"
                else cfg.num_envs * cfg.algorithm["steps_per_iteration"])
    iterations = math.ceil(steps / per_iter)
    n_evals = (iterations // cfg.runner.eval_interval + 1) if cfg.runner.eval_interval > 0 else 0
    eval_s = rates.get("eval_full_s") or 0.0
    return starts / random_sps + (steps - starts) / rates["learn_sps"] + (n_evals + 1) * eval_s


def print_estimate(rows: list[dict], envs: list[str], algos: list[str], seeds: int, threads: int,
                   ppo_steps: int, sac_steps: int) -> dict:
    """The full campaign's duration (3 seeds and the requested seeds) from the runs' measured rates."""
    rates: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["rates"].get("learn_sps"):
            rates.setdefault((r["env"], r["algo"]), []).append(r["rates"])

    def pooled(env: str, algo: str) -> tuple[dict | None, bool]:
        own = rates.get((env, algo))
        if not own:  # extrapolate from the same algorithm on other envs
            own = [x for (e, a), xs in rates.items() if a == algo for x in xs]
            if not own:
                return None, True
            extrapolated = True
        else:
            extrapolated = False
        keys = ("random_sps", "learn_sps", "eval_full_s")
        return {k: statistics.median([x[k] for x in own if x.get(k)] or [0.0]) or None for k in keys}, extrapolated

    plans = {"PPO 1M": ("ppo", 1_000_000), f"SAC {steps_label(CPU_SAC_STEPS)}": ("sac", CPU_SAC_STEPS),
             "SAC 1M": ("sac", 1_000_000)}
    per_run: dict[str, dict[str, float | None]] = {}
    guessed = set()
    for label, (algo, steps) in plans.items():
        per_run[label] = {}
        for env in ENVS:
            rate, extra = pooled(env, algo)
            per_run[label][env] = estimate_run_s(env, algo, steps, threads, rate) if rate else None
            if extra:
                guessed.add((label, env))
    print("\nEstimated duration of full runs on this machine (one run after another, from the measured "
          "steps/s of these runs; envs marked * extrapolated from another env's rate):")
    out: dict[str, Any] = {"per_run_s": per_run}
    for label, by_env in per_run.items():
        parts = [f"{e}{'*' if (label, e) in guessed else ''} {fmt_duration(s)}" for e, s in by_env.items()]
        print(f"  {label:8s} per run: " + ", ".join(parts))
    known = lambda label: sum(s for s in per_run[label].values() if s)  # noqa: E731
    total_300k = 3 * (known("PPO 1M") + known(f"SAC {steps_label(CPU_SAC_STEPS)}"))
    total_1m = 3 * (known("PPO 1M") + known("SAC 1M"))
    print(f"  all 4 envs x PPO 1M + SAC {steps_label(CPU_SAC_STEPS)}, 3 seeds: {fmt_duration(total_300k)}; "
          f"with SAC 1M: {fmt_duration(total_1m)}")
    wanted = 0.0
    for algo in algos:
        for env in envs:
            rate, _ = pooled(env, algo)
            s = estimate_run_s(env, algo, ppo_steps if algo == "ppo" else sac_steps, threads, rate) if rate else None
            wanted += seeds * (s or 0.0)
    print(f"  this selection at full budget (PPO {steps_label(ppo_steps)}, SAC {steps_label(sac_steps)}, "
          f"{seeds} seed(s), {len(envs)} env(s)): {fmt_duration(wanted)}")
    out.update({"campaign_3_seeds_sac_300k_s": total_300k, "campaign_3_seeds_sac_1M_s": total_1m,
                "selection_full_budget_s": wanted})
    return out


# ----------------------------------------------------------------------------------------------
# table

def fmt_duration(s: float | None) -> str:
    if s is None or s <= 0:
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def mean_std(values: list[float | None]) -> str:
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:  # one seed has no spread to show
        return f"{xs[0]:.1f} (n=1)"
    return f"{statistics.fmean(xs):.1f} ± {statistics.stdev(xs):.1f} (n={len(xs)})"


def table(rows: list[dict], envs: list[str], algos: list[str]) -> str:
    lines = ["| env | algo | steps | roboreal final return, last.pt (mean ± std over seeds) | best eval "
             "| published (source) | wall-clock per run | env steps/s | config |",
             "|---|---|---:|---|---|---|---:|---:|---|"]
    for env in envs:
        for algo in algos:
            group = [r for r in rows if r["env"] == env and r["algo"] == algo]
            if not group:
                continue
            pub = "; ".join(f"{fig} [{key}]" for key, fig in PUBLISHED.get((env, algo), []))
            walls = [r["wall_time_s"] for r in group if r["wall_time_s"]]
            sps = [r["steps_per_s"] for r in group if r["steps_per_s"]]
            configs = sorted({r["config"] for r in group})
            steps = sorted({r["global_step"] or r["steps"] for r in group})
            wall = fmt_duration(statistics.fmean(walls)) if walls else "n/a"
            rate = f"{statistics.fmean(sps):,.0f}" if sps else "n/a"
            lines.append(f"| {env} | {algo} | {', '.join(f'{s:,}' for s in steps)} "
                         f"| {mean_std([r['final_return'] for r in group])} "
                         f"| {mean_std([r['best_eval_return'] for r in group])} | {pub or 'n/a'} "
                         f"| {wall} | {rate} | {'; '.join(configs)} |")
    notes = ["", "Published figures are at 1M env steps on older env versions (v1-v4); their measures differ:"]
    notes += [f"[{k}] {v}" for k, v in SOURCES.items()]
    return "\n".join(lines + notes)


# ----------------------------------------------------------------------------------------------

def merged_rows(paths: list[Path], envs: list[str], algos: list[str], budgets: dict[str, int]
                ) -> tuple[list[dict], list[dict]]:
    """Rows of earlier results files (runs whose directories are gone, e.g. other seeds trained
    on another machine), for the selected envs and algorithms at today's budgets; with each
    file's commands and note, so the merged table still says how every row was made."""
    rows: list[dict] = []
    sources: list[dict] = []
    seen: dict[tuple, Path] = {}
    for path in paths:
        try:
            with open(path) as f:
                data = json.load(f)
            file_rows = data["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--merge {path}: not a standard_tasks results file ({type(e).__name__}: {e})")
        commands = data.get("commands") or ([data["command"]] if data.get("command") else [])
        for r in file_rows:
            if r["env"] not in envs or r["algo"] not in algos or r["steps"] != budgets[r["algo"]]:
                continue
            key = (r["env"], r["algo"], r["seed"], r["steps"])
            if key in seen:
                raise SystemExit(f"--merge: {r['env']} {r['algo']} seed {r['seed']} at {r['steps']:,} steps is in "
                                 f"both {seen[key]} and {path}")
            seen[key] = path
            rows.append({"merged_from": str(path), **r})  # a row merged before keeps its first file
        sources.extend(data.get("merged") or [])  # a merged file's own sources travel with its rows
        sources.append({"file": str(path), "commands": commands, "note": data.get("note")})
    return rows, sources


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=list(ENVS), help="Gymnasium env ids (trained as gym:<id>)")
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per env and algorithm")
    p.add_argument("--first-seed", type=int, default=0,
                   help="train seeds K..N-1 only (the others' rows can come from an earlier results file, --merge)")
    p.add_argument("--merge", nargs="+", type=Path, default=[], metavar="RESULTS_JSON",
                   help="add the rows of earlier results files (same envs, algorithms and budgets; a run "
                        "trained now replaces its merged row): --seeds 0 trains nothing and prints their table")
    p.add_argument("--note", default=None, help="how the runs ran (what ran beside them, ...), kept in the results file")
    p.add_argument("--ppo-steps", type=int, default=1_000_000)
    p.add_argument("--sac-steps", type=int, default=1_000_000,
                   help=f"SAC env steps (published figures are at 1M; {CPU_SAC_STEPS:,} is the CPU-feasible budget)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where run directories are kept (default runs/standard_tasks, runs/standard_tasks_quick)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default <runs-dir>/results.json)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (runner.num_threads)")
    p.add_argument("--quick", action="store_true",
                   help=f"a few thousand steps per run (PPO {QUICK_STEPS['ppo']}, SAC {QUICK_STEPS['sac']} with "
                        "learning from step 1000, an evaluation every iteration): checks the code, estimates the "
                        "full campaign")
    args = p.parse_args(argv)

    command = shlex.join(["python", *(sys.argv if argv is None else ["benchmarks/standard_tasks.py", *argv])])
    print(f"$ {command}", flush=True)
    unknown = [e for e in args.envs if e not in ENVS]
    if unknown:
        print(f"note: {', '.join(unknown)} not in the standard set {', '.join(ENVS)}: no published figures")
    runs_dir = args.runs_dir or Path("runs") / ("standard_tasks_quick" if args.quick else "standard_tasks")
    out_path = args.out or runs_dir / "results.json"
    runs_dir.mkdir(parents=True, exist_ok=True)
    train_seeds = range(args.first_seed, args.seeds)  # empty with --seeds 0: only merged rows
    budgets = {"ppo": QUICK_STEPS["ppo"] if args.quick else args.ppo_steps,
               "sac": QUICK_STEPS["sac"] if args.quick else args.sac_steps}
    print(f"runs: {runs_dir}   results: {out_path}   budgets: "
          + ", ".join(f"{a} {budgets[a]:,} steps" for a in args.algos) + (f"   seeds {train_seeds[0]}..{train_seeds[-1]}" if train_seeds else "   no seeds trained")
          + f"   {args.threads} torch thread(s) per run", flush=True)

    import torch

    torch.set_num_threads(args.threads)
    earlier, merged_sources = merged_rows(args.merge, args.envs, args.algos, budgets)
    earlier = [r for r in earlier if r["seed"] not in train_seeds]  # a run trained now replaces its merged row
    for r in earlier:
        print(f"  {r['env']} {r['algo']} seed {r['seed']}: from {r['merged_from']}; last.pt {r['final_return']:.1f}",
              flush=True)
    rows: list[dict] = []
    t_all = time.perf_counter()
    for env in args.envs:
        for algo in args.algos:
            for seed in train_seeds:
                t0 = time.perf_counter()
                row = run_one(env, algo, seed, budgets[algo], runs_dir, args.threads, args.quick)
                rows.append(row)
                best = row["best_eval_return"]
                print(f"  {env} {algo} seed {seed}: {row['status']}; last.pt {row['final_return']:.1f} "
                      f"(10 episodes, length {row['final_length']:.0f}), best eval "
                      f"{'n/a' if best is None else f'{best:.1f}'} at step {row['best_eval_step']}, "
                      f"{row['global_step']:,} steps in {fmt_duration(row['wall_time_s'])} "
                      f"({row['steps_per_s']:,.0f} steps/s); {time.perf_counter() - t0:.0f} s here",
                      flush=True)
                with open(out_path, "w") as f:  # after every run: an interrupted campaign keeps its figures
                    json.dump({"command": command, "note": args.note, "quick": args.quick, "rows": earlier + rows,
                               "merged": merged_sources}, f, indent=2)
    rows = sorted(earlier + rows, key=lambda r: (r["env"], r["algo"], r["seed"]))
    print()
    print(table(rows, args.envs, args.algos))
    estimate = print_estimate(rows, args.envs, args.algos, len(train_seeds), args.threads, args.ppo_steps,
                              args.sac_steps)
    with open(out_path, "w") as f:
        json.dump({"command": command, "note": args.note, "quick": args.quick, "rows": rows, "merged": merged_sources,
                   "estimate": estimate,
                   "published": {f"{e}/{a}": v for (e, a), v in PUBLISHED.items()}, "sources": SOURCES,
                   "elapsed_s": round(time.perf_counter() - t_all, 1)}, f, indent=2)
    print(f"\nresults: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
