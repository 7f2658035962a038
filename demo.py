"""The main job (`./dev demo`): the whole loop on a simulated Panda, over ROS 2.

1. Train `panda-reach` with PPO on the CPU, export the bundle, check it in sim2sim
   (nominal vs the held-out "heavy" perturbations).
2. Deploy it with `roboreal launch record_session.launch.xml` (sim bridge + policy node +
   teleop + recorder) on a *perturbed* simulated robot: the heavy preset's physics (gains,
   masses, friction) and its driver's latencies and sensor noise.
3. A scripted operator (`roboreal.sim2real.operator`) watches the end effector and takes
   over through the joystick path (/joy -> teleop -> the policy node's intervention)
   whenever the policy strays or falls short of a goal; the recorder writes the session
   (HDF5 for DAgger, MCAP of the raw topics).
4. `roboreal dagger` on the recorded takeovers plus simulation data, then export.
5. Redeploy the new bundle on the same perturbed robot with the same goals and print
   before/after: goals reached by the policy, mean error, takeovers, the safety chain's
   interventions.

Everything (runs, bundles, recordings, summary.json, before_after.png) goes into one
folder, printed at the end.

One module although it is over 400 lines: the main job's steps read top to bottom, in
the order they run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent
TASK = "panda-reach"
ROBOT = "panda"


@dataclass
class DemoSize:
    ppo_steps: int = 300_000
    goals: int = 8
    sim2sim_episodes: int = 16
    dagger_rounds: int = 3
    dagger_initial: int = 8  # simulated expert demonstrations of round 0
    dagger_per_round: int = 8
    bc_epochs: int = 40


QUICK = DemoSize(ppo_steps=40_000, goals=3, sim2sim_episodes=4, dagger_rounds=1, dagger_initial=2, dagger_per_round=2,
                 bc_epochs=3)


def heading(n: int | None, text: str) -> None:
    print(f"\n== {f'{n}. ' if n is not None else ''}{text}", flush=True)


# ------------------------------------------------------------------ 1. train, export, sim2sim
def train_and_export(run_dir: Path, size: DemoSize, seed: int) -> tuple[Path, dict]:
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import train
    from roboreal.sim2real.bundle import export_bundle

    heading(1, f"training {TASK} with PPO for {size.ppo_steps:,} env steps (run: {run_dir})")
    stats = train(resolve_config(TASK, "ppo", seed=seed, total_steps=size.ppo_steps), run_dir, progress=True)
    print(f"   final training success rate {stats.get('train/success_rate', float('nan')):.2f}")
    bundle = export_bundle(run_dir)
    print(f"   exported {bundle}: {', '.join(sorted(p.name for p in bundle.iterdir()))}")
    return bundle, sim2sim(bundle, size, seed)


def sim2sim(bundle: Path, size: DemoSize, seed: int) -> dict:
    from roboreal.sim2real.sim2sim import run_sim2sim

    print(f"   sim2sim through the deployment path ({size.sim2sim_episodes} episodes each): ", end="", flush=True)
    r = run_sim2sim(bundle, "heavy", episodes=size.sim2sim_episodes, seed=seed, progress=False)
    out = {"nominal_success": r["nominal"]["success_rate"], "heavy_success": r["perturbed"]["success_rate"]}
    print(f"success nominal {out['nominal_success']:.2f}, heavy perturbations {out['heavy_success']:.2f}")
    return out


# ------------------------------------------------------------------ 2.-3. a deployment session
def perturbed_robot_params(path: Path, action_size: int) -> Path:
    """A ROS 2 params file: the sim bridge as the heavy preset's robot (physics and driver),
    the teleop node taking the operator's Joy axes as the action."""
    import yaml

    from roboreal.sim2real.operator import teleop_params
    from roboreal.sim2real.simulated_driver import preset_conditions
    from roboreal.sim2real.sim2sim_dds import bridge_parameters

    _, driver = preset_conditions("heavy")
    bridge = bridge_parameters("heavy", driver)
    params = {"sim_bridge": {"ros__parameters": bridge},
              "teleop": {"ros__parameters": teleop_params(action_size)}}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def sample_goals(n: int, seed: int) -> np.ndarray:
    """Goals inside the task's goal box (the robot base frame), the same for every session."""
    from roboreal.envs.tasks.panda import PandaReachCfg

    cfg = PandaReachCfg()
    rng = np.random.default_rng(seed)
    return rng.uniform(cfg.goal_low, cfg.goal_high, size=(n, 3))


def deploy_session(bundle: Path, goals: np.ndarray, out: Path, params_file: Path, seed: int, label: str,
                   startup_timeout: float = 90.0) -> dict:
    """Launch the recording session on the perturbed robot, supervise each goal with the
    scripted operator, end one recorded episode per goal. Returns the session's figures."""
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from rich.console import Console
    from rich.progress import Progress
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger

    from roboreal.robots.spec import load_robot
    from roboreal.policy_bundle import load_bundle
    from roboreal.sim2real.nodes.step_record import audit_from_msg, parse_info
    from roboreal.sim2real.operator import ScriptedOperator
    from roboreal.sim2real.sim2sim_dds import GroundTruthProbe

    spec = load_robot(ROBOT)
    manifest = load_bundle(bundle, robot=spec).manifest
    domain = int(os.environ["ROS_DOMAIN_ID"])
    log = out.with_suffix(".launch.log")
    cmd = [sys.executable, "-m", "roboreal", "launch", "record_session.launch.xml", f"bundle:={bundle}",
           f"out:={out}", f"robot:={ROBOT}", f"params_file:={params_file}", "randomize:=true",
           "randomization:=heavy", f"seed:={seed}", "max_episode_s:=120.0"]

    def start_launch(mode: str = "w") -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=ROOT / "launch", start_new_session=True, stdout=open(log, mode),
                                stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    launch = start_launch()
    probe = GroundTruthProbe(spec, domain)
    node = probe.node
    audit: list[dict] = []
    info: dict = {}
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Float64MultiArray, "/policy_node/audit", lambda m: audit.append(audit_from_msg(m)),
                             QoSProfile(depth=100))
    node.create_subscription(String, "/policy_node/info", lambda m: info.update(parse_info(m.data)), latched)
    end_episode = node.create_client(Trigger, "/recorder/end_episode")
    reset = node.create_client(Trigger, "/policy_node/reset")
    operator = ScriptedOperator(node, spec, np.asarray(manifest["action"]["scale"], dtype=np.float64))
    results = []
    try:
        t0 = time.monotonic()
        with Console().status(f"   {label}: starting the sim bridge, policy node, teleop and recorder"):
            held_since = stuck_since = None
            relaunches = 0
            while probe.mode != "policy" or probe.ee is None:  # the goal stream starts at once (command watchdog)
                probe.send(goal=goals[0])
                # a stall of a loaded 2-core machine may trip the joint-state watchdog during startup (a
                # latched hold): reset the policy node, as an operator would
                holding = probe.mode in ("hold", "damping")
                held_since = (held_since or time.monotonic()) if holding else None
                stuck_since = (stuck_since or time.monotonic()) if holding else None
                if held_since is not None and time.monotonic() - held_since > 1.5:
                    _call(reset, Trigger)
                    held_since = None
                # The reset waits for a still robot, judged by the reported joint velocities; the heavy
                # driver's velocity noise (std 1.15 rad/s) keeps them above 0.5 rad/s, so a hold latched at
                # startup may never clear: start the session again (nothing has been recorded yet).
                if stuck_since is not None and time.monotonic() - stuck_since > 15.0 and relaunches < 2:
                    relaunches += 1
                    print(f"   {label}: the startup hold cannot be reset (noisy joint velocities); relaunching")
                    _stop(launch)
                    for leftover in (out, out.with_suffix(".mcap")):
                        leftover.unlink(missing_ok=True)
                    launch = start_launch("a")
                    held_since = stuck_since = None
                    t0 = time.monotonic()
                if launch.poll() is not None:
                    raise RuntimeError(f"the launch exited early with code {launch.returncode} (log: {log})")
                if time.monotonic() - t0 > startup_timeout:
                    raise RuntimeError(f"no policy mode after {startup_timeout:.0f} s (mode {probe.mode!r}; "
                                       f"log: {log})")
                time.sleep(0.1)
        print(f"   {label}: the robot is up after {time.monotonic() - t0:.0f} s (launch log {log.name})")
        with Progress(transient=True) as bar:
            task = bar.add_task(f"   {label}: goals", total=len(goals))
            for goal in goals:
                _recover(probe, reset, Trigger)
                first = len(audit)
                r = operator.supervise(goal, lambda g=goal: probe.send(goal=g))
                r["commands"] = len(audit) - first
                r["changed_by_chain"] = sum(1 for a in audit[first:] if int(a["interventions"]))
                r["modes"] = sorted({int(a["mode"]) for a in audit[first:]})
                results.append(r)
                _call(end_episode, Trigger)  # one recorded episode per goal
                bar.advance(task)
        filters = info.get("audit_interventions", [])
        by_filter: dict[str, int] = {}
        for a in audit:
            for i, f in enumerate(filters):
                if int(a["interventions"]) & (1 << i):
                    by_filter[f] = by_filter.get(f, 0) + 1
    finally:
        probe.close()
        _stop(launch)
    for r in results:
        status = "reached" if r["reached_by_policy"] else f"{r['takeover']}: operator {r['takeover_s']:.1f} s"
        print(f"   goal {np.round(r['goal'], 2).tolist()}: policy error {r['policy_error'] * 100:5.1f} cm  "
              f"({status}; final {r['final_error'] * 100:.1f} cm)")
    return {"goals": results, "chain_interventions": by_filter, "commands": len(audit),
            "changed_by_chain": sum(1 for a in audit if int(a["interventions"])), "dataset": str(out),
            **session_figures(results)}


def _stop(launch: subprocess.Popen) -> None:
    if launch.poll() is None:
        os.killpg(launch.pid, signal.SIGINT)  # the recorder writes the running episode and closes the MCAP
    try:
        launch.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.wait()


def _call(client, srv_type, timeout: float = 5.0):
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    future = client.call_async(srv_type.Request())
    end = time.monotonic() + timeout
    while not future.done() and time.monotonic() < end:
        time.sleep(0.02)
    return future.result() if future.done() else None


def _recover(probe, reset, srv_type) -> None:
    """A stall of a loaded 2-core machine may trip the joint-state watchdog (a latched hold):
    reset the policy node, as an operator would, before the next goal."""
    if probe.mode in ("hold", "damping"):
        _call(reset, srv_type)
        end = time.monotonic() + 5.0
        while probe.mode != "policy" and time.monotonic() < end:
            time.sleep(0.05)


def session_figures(results: list[dict]) -> dict:
    n = len(results)
    return {"reached_by_policy": sum(r["reached_by_policy"] for r in results), "goals_total": n,
            "mean_policy_error_cm": float(np.mean([r["policy_error"] for r in results]) * 100),
            "takeovers": sum(not r["reached_by_policy"] for r in results),
            "operator_s": float(sum(r["takeover_s"] for r in results))}


# ------------------------------------------------------------------ 4. DAgger
def dagger(session: Path, run_dir: Path, size: DemoSize, seed: int) -> tuple[Path, dict]:
    from roboreal.cli import main as cli
    from roboreal.sim2real.bundle import export_bundle
    from roboreal.data import DatasetReader

    with DatasetReader(session) as r:
        s = r.summary()
    print(f"   recorded {s['episodes']} episodes, {s['steps']} steps, {s['labels']} labelled by the operator "
          f"({session.name} + {session.with_suffix('.mcap').name})")
    if not s["labels"]:
        print("   the operator never took over: nothing to learn from (the policy already reached every goal)")
        return None, {"labels": 0}

    def run(out: Path, datasets: list[str]) -> tuple[Path, dict]:
        args = ["dagger", "--task", TASK, "--expert", "scripted", *datasets, "--run-dir", str(out),
                "--rounds", str(size.dagger_rounds), "--seed", str(seed), "--quiet",
                f"initial_episodes={size.dagger_initial}", f"episodes_per_round={size.dagger_per_round}",
                "eval_episodes=0", f"bc.max_epochs={size.bc_epochs}"]
        print(f"   roboreal {' '.join(args)}")
        if cli(args) != 0:
            raise RuntimeError("roboreal dagger failed")
        return export_bundle(out), json.loads((out / "metrics.json").read_text())

    bundle, metrics = run(run_dir, ["--dataset", str(session)])
    print(f"   {metrics['labels']} labels in all ({s['labels']} from the robot); exported {bundle}")
    out = {"labels": metrics["labels"], "robot_labels": s["labels"], "sim2sim": sim2sim(bundle, size, seed)}
    # What did the takeovers add? The same DAgger on simulation data only, checked the same way.
    print("   for comparison, the same DAgger without the robot's takeovers (simulation data only):")
    sim_only, _ = run(run_dir.with_name(run_dir.name + "_sim_only"), [])
    out["sim_only_sim2sim"] = sim2sim(sim_only, size, seed)
    return bundle, out


# ------------------------------------------------------------------ 5. before / after
def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    b, a = summary["before"], summary.get("after")
    t = Table(title="the same perturbed robot and goals: before (PPO) / after (DAgger on the takeovers)")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")

    def row(name, key, fmt="{}"):
        t.add_row(name, fmt.format(b[key]), fmt.format(a[key]) if a else "-")

    row("goals reached by the policy", "reached_by_policy", "{}/" + str(b["goals_total"]))
    row("mean policy error (cm)", "mean_policy_error_cm", "{:.1f}")
    row("takeovers needed", "takeovers")
    row("operator time (s)", "operator_s", "{:.1f}")
    t.add_row("commands changed by the safety chain",
              f"{b['changed_by_chain']}/{b['commands']}", f"{a['changed_by_chain']}/{a['commands']}" if a else "-")
    t.add_row("  by filter", _filters(b), _filters(a) if a else "-")
    s2s_b, s2s_a = summary["sim2sim_before"], summary.get("sim2sim_after")
    t.add_row("sim2sim success, heavy (nominal)", f"{s2s_b['heavy_success']:.2f} ({s2s_b['nominal_success']:.2f})",
              f"{s2s_a['heavy_success']:.2f} ({s2s_a['nominal_success']:.2f})" if s2s_a else "-")
    Console().print(t)
    sim_only = summary.get("dagger", {}).get("sim_only_sim2sim")
    if sim_only:
        print(f"   DAgger on simulation data only (no takeovers): sim2sim heavy {sim_only['heavy_success']:.2f} "
              f"(nominal {sim_only['nominal_success']:.2f}): the difference is what the takeovers taught")


def _filters(session: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(session["chain_interventions"].items())) or "none"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    n = summary["before"]["goals_total"]
    x = np.arange(n)
    for k, (name, shift) in enumerate((("before", -0.2), ("after", 0.2))):
        s = summary.get(name)
        if not s:
            continue
        err = [g["policy_error"] * 100 for g in s["goals"]]
        bars = ax.bar(x + shift, err, width=0.4, label=f"{name} ({s['reached_by_policy']}/{n} reached)")
        for bar, g in zip(bars, s["goals"]):
            if not g["reached_by_policy"]:
                bar.set_hatch("//")
    ax.axhline(5.0, color="k", lw=0.8, ls="--", label="success radius (5 cm)")
    ax.set_xticks(x, [f"goal {i + 1}" for i in x])
    ax.set_ylabel("policy error when judged (cm)")
    ax.set_title("perturbed robot: hatched = the operator took over")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # DDS stays on this host
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    parser = argparse.ArgumentParser(prog="roboreal-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="parent folder of the demo's output folder")
    parser.add_argument("--quick", action="store_true", help="CI-sized: every stage, tiny budgets")
    parser.add_argument("--steps", type=int, default=None, help="PPO env steps")
    parser.add_argument("--goals", type=int, default=None, help="goals per deployment session")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", default=None, help="skip training: start from this bundle")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    size = QUICK if args.quick else DemoSize()
    if args.steps:
        size.ppo_steps = args.steps
    if args.goals:
        size.goals = args.goals
    out = (Path(args.out) / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    summary: dict = {"size": asdict(size), "seed": args.seed, "folder": str(out),
                     "ros_domain_id": int(os.environ["ROS_DOMAIN_ID"])}
    if args.bundle:
        bundle = Path(args.bundle).resolve()
        heading(1, f"starting from {bundle}")
        summary["sim2sim_before"] = sim2sim(bundle, size, args.seed)
    else:
        bundle, summary["sim2sim_before"] = train_and_export(out / "ppo", size, args.seed)
    summary["stages"] = ["train"]

    goals = sample_goals(size.goals, args.seed + 1)
    from roboreal.policy_bundle import load_bundle

    action_size = int(load_bundle(bundle).manifest["action"]["size"])
    params = perturbed_robot_params(out / "perturbed_robot.yaml", action_size)
    heading(2, f"deploying on a perturbed simulated Panda over ROS 2 (ROS_DOMAIN_ID {os.environ['ROS_DOMAIN_ID']}, "
               f"loopback): heavy physics + driver noise/latency ({params.name}); {size.goals} goals")
    heading(3, "a scripted operator takes over on /joy whenever the policy strays or falls short; recording")
    summary["before"] = deploy_session(bundle, goals, out / "session_before.hdf5", params, args.seed, "before")
    summary["stages"] += ["deploy", "takeover+record"]

    heading(4, "DAgger on the recorded takeovers + simulated expert data")
    new_bundle, summary["dagger"] = dagger(out / "session_before.hdf5", out / "dagger", size, args.seed)
    if new_bundle is not None:
        summary["stages"].append("dagger")
        summary["sim2sim_after"] = summary["dagger"].pop("sim2sim")
        heading(5, "redeploying the new bundle on the same perturbed robot, same goals")
        summary["after"] = deploy_session(new_bundle, goals, out / "session_after.hdf5", params, args.seed, "after")
        summary["stages"].append("redeploy")

    summary["wall_s"] = time.monotonic() - t_start
    heading(None, f"before / after ({summary['wall_s'] / 60:.1f} min in all)")
    print_summary(summary)
    b, a = summary["before"], summary.get("after")
    if a is not None:
        better = a["reached_by_policy"] > b["reached_by_policy"] or a["takeovers"] < b["takeovers"]
        verdict = ("improved: fewer takeovers / more goals reached by the policy" if better else
                   "NOT improved in this run's budget: the retrained policy needed as many takeovers")
        summary["improved"] = bool(better)
        print(f"   {verdict}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    plot(summary, out / "before_after.png")
    print(f"\n   everything is in {out} (summary.json, before_after.png, runs, bundles, session recordings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
