"""go1-walk on a CPU budget: train, then score the run's checkpoints against wall-clock.

Each method trains with one `roboreal train` command under a wall-clock budget (the
clock is around the whole command: start-up, training, checkpoints). Afterwards every
periodic checkpoint is evaluated deterministically on 64 episodes of `go1-walk` with its
default command ranges and the domain randomization the run trained with (`roboreal play
RUN --episodes 64`; `score --default-randomization`: the task's default ranges), which
gives the curve of planar velocity tracking error against wall-clock, the time to 0.25 and
0.15 m/s and the final figures. Evaluation happens after training, so it costs the run
nothing. The zero-action policy (standing still) is the reference row.

    python benchmarks/go1_walk.py train --name ppo --algo ppo --minutes 20
    python benchmarks/go1_walk.py train --name crossq --algo crossq --minutes 20 algorithm.utd=1
    python benchmarks/go1_walk.py table runs/go1_walk/*     # the side-by-side table + plot
    python benchmarks/go1_walk.py falls runs/go1_walk/ppo   # where it falls: floor friction x pushes

Run it with nothing else on the machine: the figures are wall-clock figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EPISODES = 64
EVAL_SEED = 12345
TARGETS = (0.25, 0.15)
LENGTH_TARGET = 950


def _is_randomization_override(key: object) -> bool:
    return str(key).split(".")[0] == "randomization"


def eval_overrides(info: dict, default_randomization: bool = False) -> dict:
    """The task overrides to evaluate a run under: its training overrides, without those of the
    randomization when `default_randomization` (a run trained on wider ranges, scored under the
    task's default ones)."""
    env = dict(info["env"] or {})
    if default_randomization:
        env = {k: v for k, v in env.items() if not _is_randomization_override(k)}
    return env


def evaluate_checkpoint(run_dir: Path, checkpoint: str, episodes: int = EPISODES, zero: bool = False,
                        default_randomization: bool = False) -> dict:
    from roboreal.agents.policy import ZeroPolicy, evaluate, load_policy
    from roboreal.envs import make

    module, info = load_policy(run_dir, checkpoint)
    if zero:
        module = ZeroPolicy(info["action_size"])
    env = make(info["task"], num_envs=episodes, device="cpu", seed=EVAL_SEED,
               **eval_overrides(info, default_randomization))
    try:
        result = evaluate(module, env, obs_group=info["obs_group"])
    finally:
        env.close()
    return {"step": info["step"], "error": result["velocity_tracking_error"], "length": result["mean_length"],
            "return": result["mean_return"]}


FIXED_COMMANDS = {"forward 0.5": (0.5, 0.0, 0.0), "backward 0.5": (-0.5, 0.0, 0.0), "left 0.3": (0.0, 0.3, 0.0),
                  "turn 0.8": (0.0, 0.0, 0.8)}


def fixed_command_check(run_dir: Path, checkpoint: str = "last", envs: int = 32, settle_s: float = 1.0,
                        measure_s: float = 3.0, default_randomization: bool = False) -> dict:
    """The mean base velocity (vx, vy, yaw rate) reached under each of `FIXED_COMMANDS`, held
    from the episode start: an average tracking error can hide a direction the policy never
    learned (e.g. it walks backwards but not forwards)."""
    import torch

    from roboreal.agents.policy import load_policy
    from roboreal.envs import make

    module, info = load_policy(run_dir, checkpoint)
    out = {}
    for name, command in FIXED_COMMANDS.items():
        env = make(info["task"], num_envs=envs, device="cpu", seed=EVAL_SEED,
                   **eval_overrides(info, default_randomization))
        obs, _ = env.reset()
        target = torch.tensor(command)
        reached, falls = [], 0
        steps = int((settle_s + measure_s) / env.spec.control_dt)
        with torch.no_grad():
            for t in range(steps):
                env.commands[:] = target  # held: the command the next observation carries
                obs, _, terminated, _, _ = env.step(module(obs[info["obs_group"]]))
                falls += int(terminated.sum())
                if t * env.spec.control_dt >= settle_s:
                    reached.append(torch.cat([env.base_lin_vel[:, :2], env.base_ang_vel[:, 2:3]], -1).mean(0))
        env.close()
        out[name] = {"command": list(command), "reached": torch.stack(reached).mean(0).tolist(), "falls": falls}
    return out


FALL_FRICTIONS = (0.5, 1.0, 1.25, 1.5, 1.75)


def fall_sweep(run_dir: Path, checkpoint: str = "last", frictions: tuple[float, ...] = FALL_FRICTIONS,
               push: tuple[float, float] = (0.8, 4.0), envs: int = 64, seconds: float = 20.0) -> list[dict]:
    """Where a policy falls: `envs` robots walk for `seconds` (fallen ones restart) on floors of
    each fixed friction, without pushes and with pushes of ``push`` = (max m/s per axis, every s),
    the run's other training randomization kept. Per condition: the falls, their termination
    terms and the posture at the fall (nose down: projected gravity x > 0.3; only the front feet
    down: the first two of robot.yaml's feet, go1's FR and FL, in contact and the others not)."""
    import torch

    from roboreal.agents.policy import load_policy, policy_action
    from roboreal.envs import make
    from roboreal.envs.math_utils import projected_gravity

    module, info = load_policy(run_dir, checkpoint)
    rows = []
    for friction in frictions:
        for pushed in (False, True):
            overrides = {**(info["env"] or {}), "randomization.friction.range": [friction, friction]}
            if pushed:
                overrides.update({"randomization.push.max_velocity": [push[0], push[0]],
                                  "randomization.push.interval_s": push[1]})
            else:
                overrides["randomization.push"] = None
            env = make(info["task"], num_envs=envs, device="cpu", seed=EVAL_SEED, **overrides)
            obs, _ = env.reset()
            causes: dict[str, int] = {}
            falls = nose_down = front_feet_only = 0
            with torch.no_grad():
                for _ in range(int(round(seconds / env.spec.control_dt))):
                    gravity, contacts = projected_gravity(env.base_quat), env.foot_contacts  # before the step
                    obs, _, terminated, _, _ = env.step(policy_action(module, obs, info["obs_group"]))
                    for i in terminated.nonzero().flatten().tolist():
                        falls += 1
                        cause = "+".join(k for k, v in env.termination_terms.items() if v[i])
                        causes[cause] = causes.get(cause, 0) + 1
                        nose_down += int(gravity[i, 0] > 0.3)
                        front_feet_only += int(contacts[i, :2].all() and not contacts[i, 2:].any())
            env.close()
            rows.append({"friction": friction, "push": list(push) if pushed else None, "falls": falls,
                         "causes": causes, "nose_down": nose_down, "front_feet_only": front_feet_only})
            print(f"  friction {friction:.2f} {'pushes' if pushed else 'no pushes'}: {falls} falls", flush=True)
    return rows


def report_falls(name: str, rows: list[dict], envs: int, seconds: float) -> None:
    print(f"\n{name}: falls of {envs} robots walking {seconds:.0f} s each (fallen ones restart), floor friction fixed")
    print("| floor friction | pushes | falls | termination terms | nose down at the fall | only the front feet down |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        push = f"{r['push'][0]} m/s every {r['push'][1]} s" if r["push"] else "none"
        causes = ", ".join(f"{k} {v}" for k, v in sorted(r["causes"].items())) or "-"
        print(f"| {r['friction']:.2f} | {push} | {r['falls']} | {causes} | {r['nose_down']} | {r['front_feet_only']} |")


def _iteration_times(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "progress.csv") as f:
        return {int(row["iteration"]): float(row["time_s"]) for row in csv.DictReader(f)}


def score_file(run_dir: Path, default_randomization: bool = False) -> Path:
    """Where a run's scores are: under the default randomization, a run that trained with it
    has them in score.json."""
    if default_randomization and not _trained_with_default_randomization(run_dir):
        return run_dir / "score_default_randomization.json"
    return run_dir / "score.json"


def _trained_with_default_randomization(run_dir: Path) -> bool:
    import yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        return False
    env = (yaml.safe_load(config.read_text()) or {}).get("env") or {}
    return not any(_is_randomization_override(k) for k in env)


def score_run(run_dir: Path, every_s: float = 60.0, default_randomization: bool = False) -> dict:
    """Evaluate the run's periodic checkpoints (at most one per `every_s` of training) and last.pt,
    under the run's own task overrides or (`default_randomization`) the task's default ranges."""
    kw = {"default_randomization": default_randomization}
    times = _iteration_times(run_dir)
    meta = json.loads((run_dir / "bench.json").read_text())
    # the clock: the command's wall-clock; iterations are placed on it after the start-up
    offset = meta["wall_s"] - max(times.values())
    ckpts = sorted((run_dir / "checkpoints").glob("iter_*.pt"))
    curve, last_t = [], -1e9
    for path in ckpts:
        it = int(path.stem.split("_")[1])
        t = times.get(it)
        if t is None or t - last_t < every_s:
            continue
        last_t = t
        curve.append({"time_s": t + offset, **evaluate_checkpoint(run_dir, path.name, **kw)})
        print(f"  {run_dir.name} {path.name}: {curve[-1]['time_s']:.0f} s, error {curve[-1]['error']:.3f} m/s, "
              f"length {curve[-1]['length']:.0f}", flush=True)
    final = {"time_s": meta["wall_s"], **evaluate_checkpoint(run_dir, "last", **kw)}
    curve.append(final)
    zero = evaluate_checkpoint(run_dir, "last", zero=True, **kw)
    name = run_dir.name + (" (scored under the default randomization)" if default_randomization else "")
    out = {"name": name, "command": meta["command"], "wall_s": meta["wall_s"], "curve": curve,
           "final": final, "zero_action": zero, "fixed_commands": fixed_command_check(run_dir, **kw)}
    for target in TARGETS:
        hit = next((p for p in curve if p["error"] <= target and p["length"] >= LENGTH_TARGET), None)
        out[f"time_to_{target}"] = hit["time_s"] if hit else None
    score_file(run_dir, default_randomization).write_text(json.dumps(out, indent=1))
    return out


def cmd_train(args: argparse.Namespace) -> None:
    run_dir = Path(args.out) / args.name
    command = [sys.executable, "-m", "roboreal.cli", "train", "go1-walk", "--algo", args.algo, "--seed", str(args.seed),
               "--run-dir", str(run_dir), "--no-progress",
               f"runner.max_time_s={args.minutes * 60 - args.startup_s:.0f}",
               f"runner.save_interval={args.save_interval}", *args.overrides]
    print("$", " ".join(command[2:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    (run_dir / "bench.json").write_text(json.dumps({"command": "roboreal " + " ".join(command[3:]), "wall_s": wall}))
    print(f"trained in {wall:.0f} s (wall-clock, start-up included); scoring checkpoints", flush=True)
    report([score_run(run_dir, args.every_s)])


def _fmt_time(t: float | None) -> str:
    return "not reached" if t is None else f"{t / 60:.1f} min"


def report(scores: list[dict], plot: Path | None = None) -> None:
    print(f"\ngo1-walk, {EPISODES} deterministic evaluation episodes (seed {EVAL_SEED}), default commands, the "
          "randomization each run trained with unless marked; wall-clock around the whole train command")
    header = ("method", "wall", "steps", "error m/s", "length", "zero-action error", "to 0.25", "to 0.15")
    rows = [(s["name"], f"{s['wall_s'] / 60:.1f} min", f"{s['final']['step'] / 1e6:.2f}M", f"{s['final']['error']:.3f}",
             f"{s['final']['length']:.0f}", f"{s['zero_action']['error']:.3f}", _fmt_time(s["time_to_0.25"]),
             _fmt_time(s["time_to_0.15"])) for s in scores]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    print("(a time counts once error <= target and mean episode length >= "
          f"{LENGTH_TARGET}; commands: see each run's bench.json)")
    print("\nHeld commands from a standstill (32 episodes, velocity averaged over 1-4 s; vx, vy m/s, yaw rad/s):")
    names = list(FIXED_COMMANDS)
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for s in scores:
        fixed = s.get("fixed_commands", {})
        cells = []
        for n in names:
            if n not in fixed:
                cells.append("-")
                continue
            r, c = fixed[n]["reached"], fixed[n]["command"]
            i = max(range(3), key=lambda k: abs(c[k]))  # the commanded component
            cells.append(f"{r[i]:+.2f} of {c[i]:+.1f}" + (f" ({fixed[n]['falls']} falls)" if fixed[n]["falls"] else ""))
        print(f"| {s['name']} | " + " | ".join(cells) + " |")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4.5))
        colors = plt.get_cmap("tab10" if len(scores) <= 10 else "tab20").colors  # one colour per run
        for s, color in zip(scores, colors * (len(scores) // len(colors) + 1)):
            ax.plot([p["time_s"] / 60 for p in s["curve"]], [p["error"] for p in s["curve"]], marker="o", ms=3,
                    label=s["name"], color=color)
        if scores:
            ax.axhline(scores[0]["zero_action"]["error"], color="grey", ls=":", label="standing still")
        for target in TARGETS:
            ax.axhline(target, color="k", lw=0.5, ls="--")
        ax.set_xlabel("wall-clock (min), 2-core CPU")
        ax.set_ylabel("velocity tracking error (m/s)")
        ax.set_title(f"go1-walk: {EPISODES} deterministic evaluation episodes per point")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not over them
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        print(f"wrote {plot}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one method under a wall-clock budget, then score it")
    t.add_argument("--name", required=True)
    t.add_argument("--algo", default="ppo")
    t.add_argument("--minutes", type=float, default=20.0)
    t.add_argument("--startup-s", type=float, default=15.0, help="left for start-up and the final save")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-interval", type=int, default=10)
    t.add_argument("--every-s", type=float, default=60.0, help="evaluate at most one checkpoint per this much time")
    t.add_argument("--out", default="runs/go1_walk")
    t.add_argument("overrides", nargs="*", help="key=value training overrides")
    s = sub.add_parser("score", help="(re)score trained runs (each needs a bench.json: its command and wall-clock)")
    s.add_argument("runs", nargs="+")
    s.add_argument("--every-s", type=float, default=60.0)
    r = sub.add_parser("table", help="print the table of scored runs and plot their curves")
    r.add_argument("runs", nargs="+")
    r.add_argument("--plot", default=None)
    for q in (s, r):
        q.add_argument("--default-randomization", action="store_true",
                       help="score (or show the scores) under the task's default randomization instead of the run's")
    f = sub.add_parser("falls", help="where a trained policy falls: fixed floor frictions, with and without pushes")
    f.add_argument("run")
    f.add_argument("--checkpoint", default="last")
    f.add_argument("--frictions", type=float, nargs="+", default=list(FALL_FRICTIONS))
    f.add_argument("--push", type=float, nargs=2, default=[0.8, 4.0], metavar=("MAX_MPS", "EVERY_S"),
                   help="pushes of the pushed rows (default: sim2sim's heavy preset)")
    f.add_argument("--envs", type=int, default=64)
    f.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args(argv)
    if args.cmd == "falls":
        rows = fall_sweep(Path(args.run), args.checkpoint, tuple(args.frictions), tuple(args.push), args.envs,
                          args.seconds)
        (Path(args.run) / "falls.json").write_text(json.dumps(rows, indent=1))
        report_falls(Path(args.run).name, rows, args.envs, args.seconds)
    elif args.cmd == "train":
        cmd_train(args)
    elif args.cmd == "score":
        report([score_run(Path(r), args.every_s, args.default_randomization) for r in args.runs])
    else:
        files = [score_file(Path(r), args.default_randomization) for r in args.runs]
        scores = [json.loads(f.read_text()) for f in files if f.is_file()]
        report(scores, Path(args.plot) if args.plot else None)


if __name__ == "__main__":
    main()
