"""MuJoCo Warp throughput: roboreal envs vs raw MuJoCo Warp stepping, and PPO end to end.

Measured in one run on one device, for each task and number of worlds:

- env:   ``roboreal.make(task, num_envs=N, backend="warp", device=...)`` stepping random
         actions made on the device (env-steps/s; one env-step = one control step =
         `decimation` physics steps, with observations, rewards, terminations,
         auto-resets, domain randomization and the overflow check included);
- raw:   the same MJCF, the same worlds (count, start state, randomized fields, contact
         and constraint buffer sizes) stepped by `mujoco_warp.step` alone, `decimation`
         steps per control step, no env layer, but the same physics work: new controls every
         control step (random actions through the env's own action mapping, recorded before
         timing and replayed) and each world reset to an initial state of the task (plus the
         `mujoco_warp.forward` the env's reset runs) when its episode reaches the env's
         length (the env also resets early on terminations, which raw does not compute);
- ratio: env / raw, and the env layer's overhead ``raw / env - 1`` (issue target: < 20 %);
- both with CUDA graph capture on and off (``--graph both``), the status reported as the
  backend saw it.

Then PPO end to end on ``go1-walk`` through the training runner on the Warp backend:
env-steps/s including learning, and the wall time until the mean velocity-tracking
error of the training rollouts (|command - base velocity| in the plane, m/s, over the
last ``--ppo-window`` control steps of every env) falls below ``--ppo-target-error``.

The figures this issue asks for need a CUDA GPU:

    python benchmarks/warp_throughput.py --device cuda                 # the full sweep
    python benchmarks/warp_throughput.py --device cuda --num-envs 4096 --no-ppo

On the Warp CPU device it runs as a smoke test of the script itself (tiny sizes, slow,
the numbers mean nothing for GPU throughput):

    python benchmarks/warp_throughput.py --device cpu --num-envs 4 --seconds 2

The first run on a machine compiles MuJoCo Warp's kernels (minutes on CUDA, about a
minute on the CPU device); they are cached (~/.cache/warp) for later runs, and every
measurement below is taken after a warm-up step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import mujoco
import numpy as np
import torch

import roboreal


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn, seconds: float, device: torch.device, min_iters: int = 3) -> tuple[int, float]:
    fn()  # warm-up (and, with graph capture, the capture itself)
    _sync(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        fn()
        iters += 1
        if iters >= min_iters and iters % 5 == 0 or iters >= min_iters and device.type == "cpu":
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return iters, elapsed


def bench_env(task: str, n: int, device: str, seconds: float, graph: bool | None):
    env = roboreal.make(task, num_envs=n, backend="warp", device=device, seed=0, warp={"graph_capture": graph})
    env.reset()
    dev = env.device
    gen = torch.Generator(device=dev).manual_seed(0)
    size = env.spec.action_size

    def step():
        env.step(torch.rand(n, size, generator=gen, device=dev) * 2 - 1)

    iters, elapsed = _timeit(step, seconds, dev)
    return env, n * iters / elapsed


def bench_raw(env, seconds: float, graph: bool, bank_size: int = 64) -> float:
    """`mujoco_warp.step` alone on a fresh put_model/put_data of the env's model and worlds,
    with the env's workload: varying controls and resets at the env's episode length."""
    import mujoco_warp as mjw
    import warp as wp

    sim, dev = env.sim, env.device
    n, decimation = env.num_envs, env.cfg.decimation
    # Controls as the env makes them: random actions (as bench_env draws them) through the task's
    # own mapping, in sequence (delta mappings accumulate as in the env), replayed cyclically, so
    # raw sees the env's changing targets and contacts and does no per-step mapping work itself.
    gen = torch.Generator(device=dev).manual_seed(1)
    bank = torch.stack([env._action_to_ctrl(torch.rand(n, env.spec.action_size, generator=gen, device=dev) * 2 - 1)
                        .detach().float() for _ in range(bank_size)])
    # What a reset writes: a fresh initial state of the task per world, drawn once before timing.
    qpos0, qvel0 = (x.float() for x in env._initial_state(torch.arange(n, device=dev)))
    episode = env.episode_step.cpu().numpy().astype(np.int64)  # each world's step in its episode
    length = env.max_episode_steps
    with wp.ScopedDevice(sim.wp_device):
        m = mjw.put_model(env.model)
        m.opt.warn_overflow = 0
        d = mjw.put_data(env.model, mujoco.MjData(env.model), nworld=n, nconmax=sim.nconmax, njmax=sim.njmax)
        # the env's randomized per-world fields, so both simulate the same worlds
        for name in sim.describe()["per_world_fields"]:
            owner, attr = (m.opt, "gravity") if name == "gravity" else (m, name)
            setattr(owner, attr, wp.clone(getattr(*sim._field_owner(name))))
        # the env's current state
        for field in ("qpos", "qvel", "ctrl", "act", "time", "qacc_warmstart"):
            wp.to_torch(getattr(d, field)).copy_(getattr(sim, field))
        qpos, qvel, ctrl, act, t, warm = (wp.to_torch(getattr(d, f)) for f in
                                          ("qpos", "qvel", "ctrl", "act", "time", "qacc_warmstart"))

        def physics():
            for _ in range(decimation):
                mjw.step(m, d)

        def forward():
            mjw.forward(m, d)

        physics()  # compiles anything not yet loaded
        forward()
        launch_step, launch_forward = physics, forward
        if graph:
            with wp.ScopedCapture(device=sim.wp_device) as cap_step:
                physics()
            with wp.ScopedCapture(device=sim.wp_device) as cap_forward:
                forward()
            launch_step = lambda: wp.capture_launch(cap_step.graph)  # noqa: E731
            launch_forward = lambda: wp.capture_launch(cap_forward.graph)  # noqa: E731
        k = [0]

        def control_step():
            ctrl.copy_(bank[k[0] % bank_size])
            k[0] += 1
            launch_step()
            episode[:] += 1  # on the host: no device read per step (raw has no terminations)
            done = np.flatnonzero(episode >= length)
            if done.size:  # as the backend's reset_worlds: state, act, time, warm start, then forward
                ids = torch.from_numpy(done).to(dev)
                qpos[ids], qvel[ids] = qpos0[ids], qvel0[ids]
                if act.shape[-1]:
                    act[ids] = 0.0
                t[ids] = 0.0
                warm[ids] = 0.0
                launch_forward()
                episode[done] = 0

        iters, elapsed = _timeit(control_step, seconds, dev)
    return n * iters / elapsed


class _TargetReached(Exception):
    pass


def bench_ppo(device: str, num_envs: int, seconds: float, target: float, window: int) -> dict:
    """PPO on go1-walk via the runner (backend warp): steps/s with learning, time to `target` m/s."""
    from roboreal.agents.run_config import resolve_config
    from roboreal.agents.runner import Runner

    run_dir = tempfile.mkdtemp(prefix="warp_ppo_")
    cfg = resolve_config("go1-walk", "ppo", ["backend=warp", f"runner.max_time_s={seconds}",
                                             "runner.save_interval=1000000"],
                         num_envs=num_envs, device=device, total_steps=10**12, seed=0)
    runner = Runner(cfg, run_dir, progress=False)
    env = runner.env
    errors: list[torch.Tensor] = []
    stats = {"steps": 0, "t0": None, "reached_s": None, "first_error": None, "last_error": None}
    inner_step = env.step

    def step(actions):
        if stats["t0"] is None:
            _sync(env.device)
            stats["t0"] = time.perf_counter()
        out = inner_step(actions)
        stats["steps"] += env.num_envs
        errors.append(env.velocity_tracking_error().mean())  # stays on the device
        if len(errors) >= window:
            mean = float(torch.stack(errors).mean())  # one host read per window
            errors.clear()
            if stats["first_error"] is None:
                stats["first_error"] = mean
            stats["last_error"] = mean
            if mean <= target and stats["reached_s"] is None:
                stats["reached_s"] = time.perf_counter() - stats["t0"]
                raise _TargetReached
        return out

    env.step = step
    with contextlib.suppress(_TargetReached):
        runner.run()
    _sync(env.device)
    wall = time.perf_counter() - (stats["t0"] or time.perf_counter())
    runner.close()
    return {"num_envs": num_envs, "env_steps": stats["steps"], "wall_s": wall,
            "steps_per_s": stats["steps"] / max(wall, 1e-9), "reached_s": stats["reached_s"],
            "first_error": stats["first_error"], "last_error": stats["last_error"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tasks", nargs="+", default=["go1-walk", "panda-reach"])
    p.add_argument("--num-envs", nargs="+", type=int, default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    p.add_argument("--graph", choices=["on", "off", "both"], default="both",
                   help="CUDA graph capture for env and raw (the CPU device always runs eagerly)")
    p.add_argument("--no-ppo", action="store_true", help="skip the PPO end-to-end measurement")
    p.add_argument("--ppo-envs", type=int, default=None, help="PPO worlds (default 4096 on CUDA, else the "
                                                               "smallest --num-envs)")
    p.add_argument("--ppo-seconds", type=float, default=None, help="PPO wall-clock budget (default 1200 on "
                                                                   "CUDA, else 3 x --seconds)")
    p.add_argument("--ppo-target-error", type=float, default=0.25, help="m/s, mean planar tracking error")
    p.add_argument("--ppo-window", type=int, default=200, help="control steps averaged per error reading")
    args = p.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no CUDA device (torch.cuda.is_available() is False, "
                         f"torch {torch.__version__}); the GPU figures need a CUDA GPU. "
                         "`--device cpu --num-envs 4 --seconds 2` runs the smoke test on the Warp CPU device.")
    try:
        import mujoco_warp
        import warp as wp
    except ImportError as e:
        raise SystemExit(f"this benchmark needs MuJoCo Warp ({e}): pip install -e '.[dev]'") from None
    name = torch.cuda.get_device_name(device) if cuda else f"Warp CPU device ({os.cpu_count()} cores)"
    print(f"device: {name}; mujoco {mujoco.__version__}, mujoco_warp {mujoco_warp.__version__}, "
          f"warp {wp.__version__}, torch {torch.__version__}")
    if not cuda:
        print("NOTE: no CUDA device - this is a smoke test of the script on the Warp CPU device; the figures "
              "below say nothing about GPU throughput. Run it with --device cuda on a GPU for the real numbers.")
    graphs = {"on": [True], "off": [False], "both": [True, False]}[args.graph] if cuda else [None]
    header = (f"{'task':12s} {'worlds':>6s} {'graph':>5s} {'env steps/s':>13s} {'raw steps/s':>13s} "
              f"{'env/raw':>7s} {'overhead':>8s}  buffers / graph status")
    print(header)
    print("-" * len(header))
    for task in args.tasks:
        for n in args.num_envs:
            for graph in graphs:
                env, ours = bench_env(task, n, args.device, args.seconds, graph)
                info = env.sim.describe()
                raw = bench_raw(env, args.seconds, bool(graph) and cuda)
                label = {True: "on", False: "off", None: "-"}[graph]
                print(f"{task:12s} {n:6d} {label:>5s} {ours:13,.0f} {raw:13,.0f} {ours / raw:7.2f} "
                      f"{raw / ours - 1:8.1%}  nconmax {info['nconmax']} njmax {info['njmax']}; "
                      f"{info['graph_capture']}", flush=True)
                env.close()
                del env
                if cuda:
                    torch.cuda.empty_cache()
    print("env-steps/s: one env-step = one control step (decimation physics steps) of one world; "
          "overhead = raw / env - 1 (target < 20 %)")

    if args.no_ppo:
        return
    ppo_envs = args.ppo_envs or (4096 if cuda else min(args.num_envs))
    seconds = args.ppo_seconds or (1200.0 if cuda else 3 * args.seconds)
    r = bench_ppo(args.device, ppo_envs, seconds, args.ppo_target_error, args.ppo_window if cuda else 4)
    reached = (f"{r['reached_s']:.0f} s" if r["reached_s"] is not None
               else f"not reached in {r['wall_s']:.0f} s")
    print(f"\nPPO go1-walk end to end ({r['num_envs']} worlds, backend warp, learning included): "
          f"{r['steps_per_s']:,.0f} env-steps/s over {r['env_steps']:,} steps ({r['wall_s']:.0f} s; "
          f"target > 100,000 on one H100)")
    first = "-" if r["first_error"] is None else f"{r['first_error']:.3f}"
    last = "-" if r["last_error"] is None else f"{r['last_error']:.3f}"
    print(f"tracking error (training rollouts, m/s): first reading {first}, last {last}; "
          f"time to <= {args.ppo_target_error} m/s: {reached}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
