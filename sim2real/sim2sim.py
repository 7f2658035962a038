"""sim2sim: run an exported bundle through the deployment path, in simulation.
(Just over 400 lines: the deployment loop reads in order, from the driver's readings to the command.)

Not the training env's tensors: each simulated robot is driven exactly as a real one is,

    physics (its own rate) --> driver readings (latency ms, jitter, drops, noise)
        --> ObservationBuilder --> bundle runtime (ONNX) --> SafetyChain --> command
        --> (command latency ms) --> the robot's PD (MuJoCo position servos, robot.yaml gains)

with `PolicyController`, the same code the ROS 2 policy node runs, at the bundle's control
period. The task env only keeps the score: it samples velocity commands / goals, applies
physical randomization and pushes, detects falls and success, and computes the tracking
error from the true state. Each robot first goes through the chain's startup ramp and
fade-in, as on hardware; the evaluated episode starts when that is done.

**Cameras** (a bundle whose manifest lists ``images``): the task env renders its cameras
(`envs.sim.camera_renderer`, over the env's own worlds, its task's fixed cameras included:
the env is made from the bundle's task with the run's overrides) after every control period;
each frame goes to the robot like a sensor message (the driver's sensor latency, jitter and
drops) and through the policy node's decoders into its camera input (`images.feed_rendered`:
rgb8 bytes, the manifest's size checked), and the bundle runs as the policy node runs it
(`ImageFedPolicy`: the latest frame of each camera). A robot is started only once every
camera has delivered. Camera randomization is a perturbation like the physical ones: none in
the nominal run; the preset's otherwise (`simulated_driver.camera_randomization`: the task's
training ranges, widened by ``camera_scale``, 1.5 for ``heavy``; a YAML preset may set
``randomization.camera`` itself). The report lists each episode's draws
(``camera_randomization``).

Two runs side by side: nominal (no randomization, a perfect driver) and a held-out preset
(`heavy`, or a YAML file with ``randomization:`` and ``driver:`` sections) whose ranges go
beyond training. The report adds the chain's interventions, latched faults, the largest
per-step command change, and a "training vs deployment" check: the same states through
the env's observation terms and through the builder, largest difference per term.

The robot is the bundle's (its manifest's ``robot.source``: a name, or the path of a
robot.yaml anywhere; ``robot=`` / ``--robot REF`` finds it elsewhere, e.g. for a bundle
moved to another machine). The robot found is checked against the manifest (name, joints,
spec checksum) and is the robot the task env simulates.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from roboreal.config import ConfigError, from_dict
from roboreal.robots.model import actuator_ids
from roboreal.sim2real.simulated_driver import (DriverCfg, DriverReadings, camera_fed_controller,
                                                camera_randomization, check_rendered_cameras, compare_observations,
                                                deliver, preset_conditions)
from roboreal.policy_bundle import BundlePolicy, check_robot, load_bundle, load_manifest_robot, manifest_robot


# --------------------------------------------------------------------------- the run
@dataclass
class _World:
    ctl: object
    inbox: list = field(default_factory=list)  # (arrival, stamp, kind, payload)
    outbox: collections.deque = field(default_factory=collections.deque)  # (apply_at, ctrl)
    ctrl: np.ndarray | None = None  # what the actuators apply now
    sensor_latency: float = 0.0
    command_latency: float = 0.0
    prev_values: np.ndarray | None = None
    largest_step: float = 0.0  # largest |command change| / (max_target_rate * dt)
    modes: collections.Counter = field(default_factory=collections.Counter)
    dropped: int = 0
    sent: int = 0  # sensor messages the driver published
    cameras: list = field(default_factory=list)  # images.CameraInput per manifest ``images`` entry
    frames: int = 0  # camera frames delivered to the policy's inputs


def task_env_overrides(manifest: dict, robot: str | None = None) -> dict:
    """The task env's overrides for a bundle's training task: the run's own, with the robot
    set to the bundle's (`manifest_robot`: `robot`, else the manifest's source) where the task
    has a ``robot`` field."""
    from roboreal.envs.registry import task_entry

    train = manifest["training"]
    overrides = dict(train.get("env_overrides") or {})
    if "robot" in {f.name for f in dataclasses.fields(task_entry(train["task"]).cfg_class)}:
        overrides["robot"] = manifest_robot(manifest, robot)
    return overrides


@torch.no_grad()
def evaluate_deployment(bundle: BundlePolicy, episodes: int, seed: int = 0, randomization: dict | None = None,
                        driver: DriverCfg | None = None, check_observations: bool = False,
                        progress: bool = False, robot: str | None = None,
                        observer: Callable[..., None] | None = None) -> dict:
    """Run one episode per simulated robot through the deployment path (module docstring).

    With `check_observations` the driver is perfect and, at every step, the env's
    observation terms and the builder's are computed from the same state: the result gets
    ``observation_difference`` (term -> largest absolute difference). `robot`: where to find
    the bundle's robot (default: the manifest's ``robot.source``). `observer(env, world, t,
    step, images)`, if given, sees every control step of the scored episodes: the
    `ControlStep` and the camera frames the policy was fed (``{camera: (C, H, W) uint8}``)."""
    from roboreal.envs import make
    from roboreal.sim2real.nodes.controller import PolicyController

    driver = DriverCfg() if check_observations or driver is None else driver  # the check: a perfect driver
    manifest = bundle.manifest
    train = manifest["training"]
    overrides = task_env_overrides(manifest, robot)
    rand = camera_randomization(dict(randomization or {"enabled": False}), train["task"], overrides)
    rand.pop("action_latency", None)  # latency is the driver's, in ms
    env_kwargs = {**overrides, "randomization": rand, "observation_noise": {}}
    env = make(train["task"], num_envs=episodes, seed=seed, **env_kwargs)
    spec = env.robot
    check_robot(manifest, spec)  # the robot the task simulates is the bundle's
    if abs(env.control_dt - float(manifest["control"]["dt"])) > 1e-9:
        raise ConfigError("control.dt", f"the bundle runs at {manifest['control']['dt']} s, task {train['task']} "
                          f"at {env.control_dt} s")
    check_rendered_cameras(bundle, env)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5125]))
    worlds = []
    for _ in range(episodes):
        ctl, cameras = camera_fed_controller(bundle, spec, PolicyController)
        worlds.append(_World(ctl, cameras=cameras))
    tracked = worlds[0].ctl.builder.tracked
    readings = DriverReadings(env, tracked, driver, rng)
    for w in worlds:
        w.sensor_latency = rng.uniform(*driver.sensor_latency_ms) / 1000.0
        w.command_latency = rng.uniform(*driver.command_latency_ms) / 1000.0

    m = env.model
    act_ids, grip_id = actuator_ids(spec, m)
    dt, pdt, dec = env.control_dt, env.physics_dt, env.cfg.decimation
    chain0 = worlds[0].ctl.chain
    rate_step = float(chain0.limits.max_target_rate) * dt if chain0.position_control else math.inf

    env.reset()
    hold = env._action_to_ctrl(torch.zeros(episodes, env.action_size, device=env.device)).cpu().double().numpy()
    for i, w in enumerate(worlds):
        w.ctrl = hold[i].copy()
    n_act = env.action_size
    camera_names = [e["camera"] for e in bundle.image_inputs]
    goal_source = hasattr(env, "goal") and any(t.source == "goal_pose.position" for t in worlds[0].ctl.builder.terms)
    has_cmd = hasattr(env, "commands") and any(t.source == "cmd_vel" for t in worlds[0].ctl.builder.terms)
    obs_diff: dict[str, float] = {}

    def tick(t: float, active: np.ndarray, score: bool) -> np.ndarray:
        """One control period at time t for the `active` worlds; returns the env actions."""
        actions = np.zeros((episodes, n_act))
        for i in np.nonzero(active)[0]:
            w, ctl = worlds[i], worlds[i].ctl
            due = [msg for msg in w.inbox if msg[0] <= t + 1e-12]
            if due:
                w.inbox = [msg for msg in w.inbox if msg[0] > t + 1e-12]
                for msg in sorted(due, key=lambda x: x[0]):
                    deliver(ctl, msg[1:], w.cameras)
                    w.frames += msg[2] == "images"
            if has_cmd:
                c = env.commands[i].tolist() if score else [0.0, 0.0, 0.0]  # stand still through the ramp
                ctl.set_cmd_vel(*c, arrival=t)
            if goal_source:
                ctl.builder.set_goal(env.goal[i].cpu().numpy(), t)
            if not ctl.started and (any(c.waiting() for c in w.cameras) or not ctl.start(t)):
                continue  # as the policy node: no start before every camera has delivered
            out = ctl.step(t)
            if observer is not None and score:
                observer(env, i, t, out, {c.name: c.latest() for c in w.cameras})
            w.modes[out.cmd.mode] += 1
            values = out.cmd.values
            if w.prev_values is not None and chain0.position_control:
                w.largest_step = max(w.largest_step, float(np.max(np.abs(values - w.prev_values))) / rate_step)
            w.prev_values = values
            target = w.outbox[-1][1].copy() if w.outbox else w.ctrl.copy()
            target[act_ids] = values
            if grip_id is not None and out.gripper is not None:
                target[grip_id] = out.gripper
            w.outbox.append((t + w.command_latency + rng.uniform(0, driver.jitter_ms / 1000.0), target))
            last = ctl.builder.last_action
            actions[i] = out.applied if last is None else last[:n_act]
        return actions

    def physics(t: float, actions: np.ndarray):
        sched = np.empty((episodes, dec, m.nu))
        for i, w in enumerate(worlds):
            for k in range(dec):
                while w.outbox and w.outbox[0][0] <= t + k * pdt + 1e-12:
                    w.ctrl = w.outbox.popleft()[1]
                sched[i, k] = w.ctrl
        result = env.step(torch.as_tensor(actions, dtype=torch.float32), ctrl=sched)
        states, sensors = env.sim.substeps()
        frames = readings.frames(result[0], camera_names, t + dt)
        for i, msgs in enumerate(readings.messages(states, sensors, t)):
            msgs += frames[i]
            w = worlds[i]
            w.sent += len(msgs)
            for stamp, kind, payload in msgs:
                if driver.drop and rng.random() < driver.drop:
                    w.dropped += 1
                    continue
                arrival = stamp + w.sensor_latency + (rng.uniform(0, driver.jitter_ms / 1000.0) if driver.jitter_ms else 0)
                w.inbox.append((arrival, stamp, kind, payload))
        return result

    # ----- the robots' startup ramp and fade-in, then the evaluated episode -----
    limits = chain0.limits
    preroll = int(math.ceil((limits.startup_ramp_time + limits.fade_in_time) / dt)) + 10
    t = 0.0
    everyone = np.ones(episodes, dtype=bool)
    # the first readings, as a driver publishes them before anything is commanded
    physics(t, np.zeros((episodes, n_act)))
    t += dt
    def in_control(w: _World) -> bool:  # the policy drives, fully faded in
        ramp = w.ctl.chain.ramp
        return (w.ctl.started and w.prev_values is not None and ramp.phase == "policy"
                and t - ramp.fade_start >= limits.fade_in_time and not w.ctl.chain.faults)

    episode_steps = env.max_episode_steps
    env.max_episode_steps = 1 << 30  # no time-out resets while the robots ramp (a reset teleports the robot)
    for k in range(3 * preroll):  # the ramp may take longer than its time (speed-limited, latency)
        if k >= preroll and all(in_control(w) for w in worlds):
            break
        physics(t, tick(t, everyone, score=False))
        t += dt
    not_ready = sum(not in_control(w) for w in worlds)
    env.max_episode_steps = episode_steps
    env.restart_episodes()
    # what each scored episode starts under: the values its world drew (reset-mode terms are not
    # redrawn before the episode ends; interval-mode ones may be); the cameras' are drawn per reset
    drawn = {k: v.cpu().tolist() for k, v in env.randomizer.values.items()}
    renderer = getattr(env, "camera_renderer", None)
    camera_draws = ([renderer.describe(i) for i in range(episodes)]
                    if camera_names and renderer is not None and renderer.randomization is not None else None)

    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=int)
    finished = np.zeros(episodes, dtype=bool)
    success = np.full(episodes, np.nan)
    err_sum, err_steps, speed_sum = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes)
    tracking = hasattr(env, "velocity_tracking_error")
    steps = env.spec.max_episode_steps + 1
    bar = _progress(progress, steps, "sim2sim")
    for _ in range(steps):
        actions = tick(t, ~finished, score=True)
        _, reward, terminated, truncated, info = physics(t, actions)
        t += dt
        running = ~finished
        returns += np.where(running, reward.cpu().numpy(), 0.0)
        lengths += running
        done = (terminated | truncated).cpu().numpy() & running
        if tracking:
            live = running & ~done
            err_sum += np.where(live, env.velocity_tracking_error().cpu().numpy(), 0.0)
            speed_sum += np.where(live, env.commands[:, :2].norm(dim=-1).cpu().numpy(), 0.0)
            err_steps += live
        if done.any():
            if "is_success" in info:
                success[done] = info["is_success"].float().cpu().numpy()[done]
            finished |= done
        if check_observations:
            compare_observations(env, [w.ctl for w in worlds], readings, ~finished, obs_diff, t)
        if bar is not None:
            bar.update(1)
        if finished.all():
            break
    if bar is not None:
        bar.close()

    reports = [w.ctl.chain.report() for w in worlds]
    interventions = {name: int(sum(r[name]["count"] for r in reports)) for name in reports[0]}
    faults = collections.Counter(k for w in worlds for k in w.ctl.chain.faults)
    total_steps = int(sum(sum(w.modes.values()) for w in worlds))
    stats = {
        "mean_return": float(returns.mean()), "std_return": float(returns.std()), "mean_length": float(lengths.mean()),
        "success_rate": float(np.nanmean(success)) if np.isfinite(success).any() else float("nan"),
        "episodes": episodes, "returns": returns.tolist(),
        "interventions": {k: v for k, v in interventions.items() if v},
        "intervention_rate": {k: v / max(1, total_steps) for k, v in interventions.items() if v},
        "faults": dict(faults),
        "largest_command_step": max(w.largest_step for w in worlds),  # x the rate limit per step
        "policy_mode_fraction": sum(w.modes["policy"] for w in worlds) / max(1, total_steps),
        "dropped_messages": int(sum(w.dropped for w in worlds)),
        "sensor_messages": int(sum(w.sent for w in worlds)),
        "driver": dataclasses.asdict(driver),
        "randomized_terms": sorted(env.randomizer.values),
        "randomization": drawn,  # term -> per-episode drawn values (a list per episode)
        "sensor_latency_ms": [w.sensor_latency * 1000.0 for w in worlds],  # per episode, as drawn
        "command_latency_ms": [w.command_latency * 1000.0 for w in worlds],
        "not_in_control_at_start": not_ready,  # robots still ramping (or faulted) when their episode began
    }
    if camera_names:
        stats["cameras"] = camera_names
        stats["camera_frames"] = int(sum(w.frames for w in worlds))  # delivered to the policy's inputs
        # per episode, what its images were rendered with (None: no camera randomization)
        stats["camera_randomization"] = camera_draws
    if tracking:
        stats["velocity_tracking_error"] = float(err_sum.sum() / max(1.0, err_steps.sum()))
        # what standing still would score: the mean commanded planar speed over the same steps
        stats["standing_still_error"] = float(speed_sum.sum() / max(1.0, err_steps.sum()))
        # 1 = perfect tracking, 0 = no better than standing still
        stats["tracking_quality"] = 1.0 - stats["velocity_tracking_error"] / max(1e-9, stats["standing_still_error"])
        stats["fell"] = int(sum(1 for i in range(episodes) if lengths[i] < env.spec.max_episode_steps))
    if check_observations:
        stats["observation_difference"] = obs_diff
    env.close()
    return stats


def _progress(enabled: bool, total: int, label: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, leave=False)


def run_sim2sim(bundle_path: str | Path, randomize: str = "heavy", episodes: int = 32, seed: int = 0,
                runtime: str = "onnx", progress: bool = False, driver_overrides: dict | None = None,
                robot: str | None = None) -> dict:
    """Nominal vs `randomize` through the deployment path, plus the observation check.
    `driver_overrides` (DriverCfg fields) replace the preset's driver conditions. `robot`:
    where to find the bundle's robot (a name or a path; default: the manifest's ``robot.source``,
    else its name)."""
    probe = load_bundle(bundle_path, robot=None, runtime=runtime)
    spec = load_manifest_robot(probe.manifest, robot)
    robot = manifest_robot(probe.manifest, robot)
    bundle = load_bundle(bundle_path, robot=spec, runtime=runtime)  # refused unless it matches the robot
    rand_none, drv_none = preset_conditions("none")
    rand, drv = preset_conditions(randomize)
    if driver_overrides:
        drv = from_dict(DriverCfg, {**dataclasses.asdict(drv), **driver_overrides}, source="sim2sim options")
    nominal = evaluate_deployment(bundle, episodes, seed, rand_none, drv_none, progress=progress, robot=robot)
    perturbed = evaluate_deployment(bundle, episodes, seed + 1, rand, drv, progress=progress, robot=robot)
    check = evaluate_deployment(bundle, min(episodes, 8), seed + 2, rand, check_observations=True, progress=progress,
                                robot=robot)
    return {"nominal": nominal, "perturbed": perturbed, "preset": str(randomize), "episodes": episodes,
            "observation_difference": check["observation_difference"], "task": bundle.manifest["training"]["task"]}


def run_sim2sim_over_dds(bundle_path: str | Path, randomize: str = "heavy", episodes: int = 2, seed: int = 0,
                         driver_overrides: dict | None = None, robot: str | None = None) -> dict:
    """Nominal vs `randomize` with the sim bridge and the policy node as processes (`sim2sim_dds`)."""
    from roboreal.sim2real.sim2sim_dds import evaluate_over_dds

    if randomize not in ("none", "heavy"):
        raise ConfigError("randomize", "over DDS only the presets none and heavy are supported")
    _, drv = preset_conditions(randomize)
    if driver_overrides:
        drv = from_dict(DriverCfg, {**dataclasses.asdict(drv), **driver_overrides}, source="sim2sim options")
    nominal = evaluate_over_dds(bundle_path, episodes, seed, robot=robot)
    perturbed = evaluate_over_dds(bundle_path, episodes, seed + 1, None if randomize == "none" else randomize, drv,
                                  robot=robot)
    return {"nominal": nominal, "perturbed": perturbed, "preset": str(randomize), "episodes": episodes}


def print_dds_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    nom, per = result["nominal"], result["perturbed"]
    table = Table(title=f"sim2sim over DDS (sim bridge + policy node processes): nominal vs {result['preset']} "
                        f"({result['episodes']} episodes each)")
    for col in ("metric", "nominal", result["preset"]):
        table.add_column(col)
    for label, key in (("mean length (control steps)", "mean_length"),
                       ("velocity tracking error (m/s)", "velocity_tracking_error"),
                       ("success rate", "success_rate"), ("final distance (m)", "final_distance")):
        if key in nom:
            table.add_row(label, f"{nom[key]:.3f}", f"{per[key]:.3f}")
    Console(width=120).print(table)


def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    nom, per = result["nominal"], result["perturbed"]
    table = Table(title=f"sim2sim through the deployment path: nominal vs {result['preset']} "
                        f"({result['episodes']} episodes each)")
    for col in ("metric", "nominal", result["preset"], "ratio"):
        table.add_column(col)
    rows = [("mean return", "mean_return"), ("success rate", "success_rate"), ("mean length", "mean_length"),
            ("velocity tracking error (m/s)", "velocity_tracking_error"),
            ("standing still would score (m/s)", "standing_still_error"),
            ("tracking quality (1 - error / standing still)", "tracking_quality"),
            ("episodes ended early (fell)", "fell"),
            ("largest command step (x rate limit)", "largest_command_step"),
            ("steps in policy mode", "policy_mode_fraction"),
            ("robots not yet in control at the episode start", "not_in_control_at_start"), ("dropped sensor messages", "dropped_messages"),
            ("camera frames fed to the policy", "camera_frames")]
    for label, key in rows:
        if key not in nom:
            continue
        a, b = nom[key], per[key]
        if isinstance(a, float) and np.isnan(a):
            continue
        ratio = f"{b / a:.2f}" if a not in (0, 0.0) else "-"
        table.add_row(label, f"{a:.3f}", f"{b:.3f}", ratio)
    for label, key in (("interventions (steps)", "interventions"), ("latched faults (robots)", "faults")):
        names = sorted(set(nom[key]) | set(per[key]))
        table.add_row(label, ", ".join(f"{k} {nom[key].get(k, 0)}" for k in names) or "none",
                      ", ".join(f"{k} {per[key].get(k, 0)}" for k in names) or "none", "")
    console.print(table)
    diff = Table(title="training vs deployment: the same states through the env's terms and the builder")
    diff.add_column("term")
    diff.add_column("largest |difference|")
    for name, d in result["observation_difference"].items():
        diff.add_row(name, f"{d:.2e}")
    console.print(diff)
