"""Mutation check: break the code on purpose and see which test catches it.

    python benchmarks/mutation_check.py                 # every mutation (about 10-20 minutes here)
    python benchmarks/mutation_check.py --list          # the list, nothing run
    python benchmarks/mutation_check.py --only her_off rate_limit_off

Each mutation is one deliberate breakage of a behaviour the project promises (drop PPO's
time-out bootstrap, turn off HER relabeling, remove the safety chain's rate limit, swap two
joints in the deployment observation builder, skip the normalizer in the exported policy, ...),
written as an exact source replacement. For each one the script

1. exports the committed tree (``git archive HEAD``) into a scratch folder once, and checks
   that the listed tests pass there unmodified (a mutation "caught" by an already failing test
   proves nothing);
2. applies the replacement (it must match exactly once, or the script stops: a stale mutation
   is reported, not silently skipped), runs the listed tests with the scratch copy first on
   ``PYTHONPATH`` (so ``import roboreal`` is the mutated code), and restores the file;
3. reports caught / SURVIVED, the first failing test and the time.

It exits 1 when a mutation survives or a baseline fails. Not part of CI (it runs each
selection of tests once per mutation); uncommitted changes are not checked.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the behaviour broken, in words
    file: str  # relative to the repository root
    old: str  # exact source text, must occur once
    new: str
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions) expected to catch it


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("ppo_no_timeout_bootstrap", "PPO stops bootstrapping V(final observation) at time-outs",
             "agents/ppo.py", "if cfg.bootstrap_timeouts and truncated.any():", "if False and truncated.any():",
             ("tests/test_agents_units.py",)),
    Mutation("her_off", "HER never relabels a goal",
             "agents/her.py", "relabel = torch.rand(batch_size, device=self.device) < self.relabel_prob",
             "relabel = torch.rand(batch_size, device=self.device) < 0.0",
             ("tests/test_agents_units.py",)),
    Mutation("sac_max_of_twin_q", "SAC's target takes the max of its twin critics (over-estimation)",
             "agents/sac.py", "q_next = torch.min(", "q_next = torch.max(",
             ("tests/test_agents_units.py", "tests/test_agents_learning.py::test_sac_her_reaches_with_the_panda_from_sparse_rewards")),
    Mutation("rate_limit_off", "the safety chain's target rate limit does nothing",
             "sim2real/safety/joint_limits.py",
             "        step = self._per_step(ctx.dt)\n        lo, hi = ctx.constrain(PRIO_RATE, ctx.prev - step, ctx.prev + step)\n"
             "        ctx.clip_to(self.name, lo, hi)\n",
             "        return\n",
             ("tests/test_safety.py",)),
    Mutation("position_limit_off", "targets may leave the joint position limits",
             "sim2real/safety/joint_limits.py",
             "            lo, hi = ctx.constrain(PRIO_POSITION, self.lower, self.upper)\n            ctx.clip_to(self.name, lo, hi)\n",
             "            pass\n",
             ("tests/test_safety.py",)),
    Mutation("watchdog_future_stamps_fresh", "a sensor stamp from the future (clock mismatch) counts as fresh",
             "sim2real/safety/guards.py", "or stamp - now > timeout:", "or False:",
             ("tests/test_safety.py",)),
    Mutation("wire_command_scaled", "the policy node publishes 1.5x the chain's command (the wire, not the chain)",
             "sim2real/nodes/policy_node.py", '        values = array.array("d", cmd.values.tolist())\n',
             '        values = array.array("d", (cmd.values * 1.5).tolist())\n',
             ("tests/test_safety_wire.py",)),
    Mutation("observation_joints_swapped", "the deployment observation builder swaps the first two joints",
             "sim2real/nodes/observation.py",
             "            i = self.index.get(name)\n            if i is None:\n",
             "            i = self.index.get(name)\n            i = (1 - i) if i in (0, 1) else i\n            if i is None:\n",
             ("tests/test_observation_builder.py",)),
    Mutation("export_without_normalizer", "the exported bundle skips the observation normalizer",
             "sim2real/bundle.py", "    module = module.cpu().eval()\n",
             "    module = module.cpu().eval()\n    module.normalizer = torch.nn.Identity()\n",
             ("tests/test_bundle.py",)),
    Mutation("iql_symmetric_expectile", "IQL's value loss ignores the expectile (plain regression to the mean)",
             "agents/iql.py", "weight = torch.where(diff < 0, 1.0 - expectile, expectile)",
             "weight = torch.full_like(diff, 0.5)",
             ("tests/test_offline_rl.py",)),
    Mutation("labels_from_policy_actions", "a file without expert labels trains on the policy's own actions",
             "data/labels.py", '    return "expert" if any_expert else "demonstrated"\n',
             '    return "expert" if any_expert else "executed"\n',
             ("tests/test_labels.py",)),
    Mutation("best_pt_first_evaluation", "best.pt keeps the first evaluation, whatever comes later",
             "agents/runner.py",
             "        if not self.state.best_eval or self._better(figures, self.state.best_eval):\n"
             "            self.state.best_eval = dict(figures)\n            self.ckpt_dir.mkdir",
             "        if not self.state.best_eval:\n            self.state.best_eval = dict(figures)\n"
             "            self.ckpt_dir.mkdir",
             ("tests/test_agents_runner.py",)),
)


def _export_tree(dest: Path) -> Path:
    """The committed tree as an importable ``roboreal`` package: ``dest/roboreal`` (the repository root is the package)."""
    pkg = dest / "roboreal"
    pkg.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(pkg)], input=archive, check=True)
    return pkg


def _run_tests(pkg: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str, float]:
    env = {**os.environ, "PYTHONPATH": f"{pkg.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                             cwd=pkg, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    wall = time.perf_counter() - t0
    text = out.stdout + out.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    return out.returncode == 0, (failed[0] if failed else text.strip().splitlines()[-1] if text.strip() else ""), wall


def _check_import_location(pkg: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    where = subprocess.run([sys.executable, "-c", "import roboreal; print(roboreal.__file__)"], cwd=pkg, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(pkg.resolve()):
        raise SystemExit(f"`import roboreal` in the scratch copy loads {where}, not the copy: cannot mutate")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run these mutations only")
    p.add_argument("--list", action="store_true", help="print the mutations and exit")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        raise SystemExit(f"unknown mutation(s) {sorted(unknown)} (known: {', '.join(m.name for m in MUTATIONS)})")
    if args.list:
        for m in chosen:
            print(f"{m.name:28s} {m.file:32s} {m.what}  [{' '.join(m.tests)}]")
        return 0
    rows, bad = [], 0
    with tempfile.TemporaryDirectory(prefix="roboreal-mutants-") as tmp:
        pkg = _export_tree(Path(tmp))
        _check_import_location(pkg)
        baselines: dict[tuple[str, ...], bool] = {}
        for m in chosen:
            if m.tests not in baselines:
                ok, first, wall = _run_tests(pkg, m.tests, args.timeout)
                baselines[m.tests] = ok
                print(f"baseline {' '.join(m.tests)}: {'pass' if ok else 'FAIL ' + first} ({wall:.0f} s)", flush=True)
            if not baselines[m.tests]:
                rows.append((m, "BASELINE FAILS", "", 0.0))
                bad += 1
                continue
            path = pkg / m.file
            source = path.read_text()
            if source.count(m.old) != 1:
                raise SystemExit(f"mutation {m.name}: its source text occurs {source.count(m.old)} times in {m.file} "
                                 f"(must be once): update the mutation to the current code")
            path.write_text(source.replace(m.old, m.new))
            try:
                ok, first, wall = _run_tests(pkg, m.tests, args.timeout)
            finally:
                path.write_text(source)
            rows.append((m, "SURVIVED" if ok else "caught", "" if ok else first, wall))
            bad += ok
            print(f"{m.name:28s} {'SURVIVED' if ok else 'caught':9s} {first} ({wall:.0f} s)", flush=True)
    print("\n| mutation | what it breaks | result | first failing test | s |\n|---|---|---|---|---|")
    for m, result, first, wall in rows:
        print(f"| {m.name} | {m.what} | {result} | {first} | {wall:.0f} |")
    print(f"\n{sum(r[1] == 'caught' for r in rows)} of {len(rows)} mutations caught")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
