"""Offline RL vs behaviour cloning on a mixed dataset: IQL and BC trained on the same data.

    python benchmarks/offline_rl.py                                   # panda-pick, 3 seeds, 32+32+32 episodes
    nice -n 19 python benchmarks/offline_rl.py --episodes 16 --seeds 0 --iql-steps 10000   # a small run
    python benchmarks/offline_rl.py --go1-run runs/go1_ppo_partial     # also go1-walk from a partly trained policy
    python benchmarks/offline_rl.py --env "goal_low=[0.45,0.2,0.15]" --env "goal_high=[0.45,0.2,0.15]" \
        --env goal_in_air_fraction=1.0 --env "goal_air_height=[0.12,0.12]"     # panda-pick with a fixed goal

The script records its own dataset per seed (simulation, so every reward is known):

- ``expert``: the scripted panda-pick expert (what ``roboreal collect --expert scripted`` records);
- ``failure``: a fumbling policy -- the expert's arm motion plus large Gaussian action noise, with
  the gripper held open (it never grasps). Executed actions only, no expert label;
- ``takeover``: that fumbling policy runs and, at a random step, the expert takes over -- to the
  end of the episode, or for a stretch before handing back -- as a human does in HG-DAgger.
  Takeover steps carry the expert's label and ``intervention=1``.

Methods, all on the same file, scored deterministically on the same ``--eval-episodes`` fresh
envs (seed 12345): ``BC (expert labels)`` -- `roboreal bc`'s default, it learns from the
labelled steps only (demonstrations + takeovers); ``BC (all actions)`` -- every executed action
(what offline RL sees, without rewards); ``IQL`` -- `roboreal offline`, the final weights (no
selection with the simulator); with ``--online-steps N``, ``IQL + online`` -- that agent fine-tuned
with N simulated transitions (`roboreal offline ... online_steps=N`). Mean +- std over seeds, wall-clock of each training.

With ``--go1-run RUN_DIR`` (a partly trained go1-walk policy) the same comparison runs on
go1-walk with ``policy`` episodes (the policy; labels = its actions) and ``noisy`` ones (its
actions plus noise, no label), scored by return and velocity tracking error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roboreal.data import format_rate


@torch.no_grad()
def record(task: str, path: Path, kind: str, episodes: int, seed: int, expert_spec: str = "scripted",
           noise: float = 0.5, env_overrides: dict | None = None) -> dict:
    """Append `episodes` episodes of `kind` (expert | failure | takeover | policy | noisy) to `path`."""
    from roboreal.agents.experts import make_expert
    from roboreal.envs import make
    from roboreal.data import BatchedRecorder, DatasetWriter, dataset_meta

    n = min(8, episodes)
    env = make(task, num_envs=n, seed=seed, **(env_overrides or {}))
    expert = make_expert(expert_spec, env)
    gen = torch.Generator().manual_seed(seed)
    pick = hasattr(env, "object_pos")
    meta = dataset_meta(env, task=task, env_overrides=env_overrides, source="sim", expert=expert.describe())
    with DatasetWriter(path, meta, mode="a" if path.exists() else "w", fsync=False) as writer:
        rec = BatchedRecorder(writer, n, max_episodes=episodes, episode_attrs={"kind": kind, "seed": seed})
        obs, _ = env.reset(seed=seed)
        t = torch.zeros(n, dtype=torch.long)
        T = env.spec.max_episode_steps

        def draw_takeover(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            start = torch.randint(5, T // 2, (k,), generator=gen)
            to_end = torch.rand(k, generator=gen) < 0.5  # half finish the episode, half hand back
            length = torch.where(to_end, torch.full((k,), T), torch.randint(20, 50, (k,), generator=gen))
            return start, start + length

        start, stop = draw_takeover(n)
        while not rec.done:
            a_exp = expert.act(obs, env).cpu().float()
            nan = torch.full_like(a_exp, float("nan"))
            fumble = (a_exp + noise * torch.randn(a_exp.shape, generator=gen)).clamp(-1, 1)
            if pick:
                fumble[:, -1] = 1.0  # the gripper stays open: it never grasps
            if kind in ("expert", "policy"):
                executed, label, proposal, inter = a_exp, a_exp, None, torch.zeros(n, dtype=torch.bool)
            elif kind in ("failure", "noisy"):
                executed, label, proposal, inter = fumble, nan, fumble, torch.zeros(n, dtype=torch.bool)
            else:  # takeover
                inter = (t >= start) & (t < stop)
                executed = torch.where(inter[:, None], a_exp, fumble)
                label, proposal = torch.where(inter[:, None], a_exp, nan), fumble
            next_obs, reward, terminated, truncated, info = env.step(executed.to(env.device))
            rec.record(obs, executed, reward, terminated, truncated, info, expert_actions=label,
                       policy_actions=proposal, intervention=inter)
            done = (terminated | truncated).cpu()
            t = torch.where(done, torch.zeros_like(t), t + 1)
            if done.any():
                s, e = draw_takeover(int(done.sum()))
                start[done], stop[done] = s, e
            obs = next_obs
    env.close()
    res = rec.results
    succ = [r["success"] for r in res if r["success"] is not None]
    return {"kind": kind, "episodes": len(res), "steps": sum(r["length"] for r in res),
            "labels": sum(r["labels"] for r in res), "interventions": sum(r["interventions"] for r in res),
            "success_rate": float(np.mean(succ)) if succ else float("nan"),
            "mean_return": float(np.mean([r["return"] for r in res]))}


def train_and_score(task: str, data: Path, seed: int, args, env_overrides: dict | None = None) -> dict:
    from roboreal.agents.bc import BCConfig, evaluate_policy, train_bc
    from roboreal.agents.iql import IQLConfig, train_iql
    from roboreal.agents.offline_data import goal_reward_fn, load_offline_data
    from roboreal.config import apply_overrides, to_dict
    from roboreal.envs import make
    from roboreal.data import load_transitions

    out = {}
    for name, labels in (("BC (expert labels)", "auto"), ("BC (all actions)", "executed")):
        t0 = time.perf_counter()
        cfg = BCConfig(labels=labels, max_epochs=args.bc_epochs)
        train, val, _ = load_transitions(data, cfg.val_fraction, seed, labels)
        trainer, _ = train_bc(train, val, cfg, seed=seed)
        wall = time.perf_counter() - t0
        out[name] = {**evaluate_policy(trainer.policy(), task, env_overrides, args.eval_episodes), "wall_s": wall,
                     "trained_on": train.num_labels + (val.num_labels if val else 0)}
    t0 = time.perf_counter()
    cfg = apply_overrides(IQLConfig, to_dict(IQLConfig()), {"steps": args.iql_steps, **dict(args.iql)})
    env = make(task, num_envs=1, **(env_overrides or {}))
    fn, why = goal_reward_fn(env)
    env.close()
    offline = load_offline_data(data, cfg.obs_group, cfg.rewards, fn, why)
    agent, _ = train_iql(offline, cfg, seed=seed)
    wall = time.perf_counter() - t0
    out["IQL"] = {**evaluate_policy(agent.policy(), task, env_overrides, args.eval_episodes), "wall_s": wall,
                  "trained_on": len(offline)}
    if args.online_steps:
        from roboreal.agents.iql import finetune_iql

        cfg.online_steps = args.online_steps
        t0 = time.perf_counter()
        env = make(task, num_envs=cfg.online_envs, seed=seed + 1, **(env_overrides or {}))
        try:
            finetune_iql(agent, offline, env, cfg, seed=seed + 1)
        finally:
            env.close()
        out[f"IQL + online {args.online_steps // 1000}k"] = {
            **evaluate_policy(agent.policy(), task, env_overrides, args.eval_episodes),
            "wall_s": wall + time.perf_counter() - t0, "trained_on": len(offline) + args.online_steps}
    return out


def compare(task: str, kinds: dict[str, int], seeds: list[int], args, expert_spec: str = "scripted",
            env_overrides: dict | None = None) -> dict:
    per_seed = []
    composition = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "mixed.hdf5"
            t0 = time.perf_counter()
            comp = [record(task, data, kind, n, seed * 1000 + i, expert_spec, args.noise, env_overrides)
                    for i, (kind, n) in enumerate(kinds.items()) if n > 0]
            print(f"seed {seed}: recorded {sum(c['episodes'] for c in comp)} episodes in "
                  f"{time.perf_counter() - t0:.1f} s: " + ", ".join(
                      f"{c['kind']} {c['episodes']} (success {format_rate(c['success_rate'])})" for c in comp),
                  flush=True)
            composition.append(comp)
            scores = train_and_score(task, data, seed, args, env_overrides)
            for m, s in scores.items():
                extra = f", tracking error {s['velocity_tracking_error']:.3f} m/s" if "velocity_tracking_error" in s \
                    else ""
                print(f"seed {seed}: {m:20s} success {format_rate(s['success_rate'])}, return {s['mean_return']:.1f}{extra} "
                      f"({s['wall_s']:.0f} s, {s['trained_on']} steps)", flush=True)
            per_seed.append(scores)
    return {"task": task, "seeds": seeds, "composition": composition, "scores": per_seed}


def table(res: dict) -> str:
    def ms(xs):
        xs = [x for x in xs if x == x]
        if not xs:
            return "-"
        return f"{np.mean(xs):.2f} +- {np.std(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"

    lines = [f"\n{res['task']}: {len(res['seeds'])} seed(s) {res['seeds']}, data per seed:"]
    for c in res["composition"][0]:
        lines.append(f"  {c['kind']:9s} {c['episodes']:4d} episodes {c['steps']:6d} steps, "
                     f"expert labels {c['labels']:6d}, "
                     f"intervention steps {c['interventions']:5d}, success {format_rate(c['success_rate'])}, "
                     f"return {c['mean_return']:.1f}")
    methods = list(res["scores"][0])
    tracking = "velocity_tracking_error" in res["scores"][0][methods[0]]
    head = f"  {'method':20s} | {'success rate':14s} | {'return':16s} | " + \
        ("tracking err m/s | " if tracking else "") + "train wall-clock s"
    lines += [head, "  " + "-" * (len(head) - 2)]
    for m in methods:
        col = lambda k: [s[m][k] for s in res["scores"]]  # noqa: E731
        lines.append(f"  {m:20s} | {ms(col('success_rate')):14s} | {ms(col('mean_return')):16s} | "
                     + (f"{ms(col('velocity_tracking_error')):16s} | " if tracking else "")
                     + f"{ms(col('wall_s'))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from roboreal.config import parse_override

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--episodes", type=int, default=32, help="episodes of each kind (expert, failure, takeover)")
    p.add_argument("--noise", type=float, default=0.5, help="std of the fumbling policy's action noise")
    p.add_argument("--iql-steps", type=int, default=50_000)
    p.add_argument("--online-steps", type=int, default=0,
                   help="then fine-tune the IQL agent online for this many simulated transitions (0: no)")
    p.add_argument("--bc-epochs", type=int, default=60)
    p.add_argument("--eval-episodes", type=int, default=64)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="panda-pick task overrides, e.g. a fixed goal (as in the README's BC vs DAgger table)")
    p.add_argument("--go1-run", default=None, help="run directory of a partly trained go1-walk policy")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("iql", nargs="*", help="IQLConfig overrides key=value (e.g. temperature=10 expectile=0.9)")
    args = p.parse_args(argv)
    args.iql = [parse_override(o) for o in args.iql]
    pick_env = dict(parse_override(o) for o in args.env)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    print(f"{sys.executable} benchmarks/offline_rl.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    results = [compare("panda-pick", {"expert": args.episodes, "failure": args.episodes, "takeover": args.episodes},
                       args.seeds, args, env_overrides=pick_env)]
    if args.go1_run:
        from roboreal.agents.policy import load_policy

        _, info = load_policy(args.go1_run)  # the task settings the policy was trained with
        if info["task"] != "go1-walk":
            raise SystemExit(f"--go1-run {args.go1_run}: a {info['task']} run, not go1-walk")
        results.append(compare("go1-walk", {"policy": args.episodes, "noisy": args.episodes}, args.seeds, args,
                               expert_spec=args.go1_run, env_overrides=dict(info["env"] or {})))
    else:
        print("go1-walk: skipped (pass --go1-run RUN_DIR, a partly trained go1-walk policy, to compare there too)")
    for res in results:
        print(table(res))
    print(f"\ntotal wall-clock {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
