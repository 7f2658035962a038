"""Simulation throughput: roboreal batched envs vs the raw physics ceiling vs Gymnasium vector envs.

For each task and number of envs, measured in the same run on the same machine:

- roboreal:  `roboreal.make(task, num_envs=N)` stepping random actions (env-steps/s,
             one env-step = one control step = `decimation` physics steps, observations,
             rewards, terminations and auto-resets included);
- ceiling:   the same MJCF stepped by MuJoCo alone in C threads (`mujoco.rollout`, one
             call for all control steps, same decimation, no Python per step);
- gym sync / gym async: the same MJCF as a plain Gymnasium env (MjData + mj_step,
             qpos/qvel observation) under `SyncVectorEnv` / `AsyncVectorEnv`. Gymnasium's
             `AsyncVectorEnv` runs exactly one env per worker process, so async is measured
             only up to one process per core (`os.cpu_count()`, printed), at the same env
             count as the other columns; above the cap it is left out ("-"), since more
             processes than cores would measure the OS scheduler, not Gymnasium.

Ratios are printed side by side. Usage:

    python benchmarks/sim_throughput.py                    # default sweep
    python benchmarks/sim_throughput.py --tasks go1-walk --num-envs 1024 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import mujoco
import mujoco.rollout
import numpy as np
import torch

import roboreal


class PlainMujocoGymEnv(gym.Env):
    """The usual way to wrap a MuJoCo model as a Gymnasium env (one MjData, mj_step in Python)."""

    def __init__(self, robot, decimation: int, timestep: float, max_steps: int = 1000):
        from roboreal.robots.model import build_model

        self.model = build_model(robot)  # the MJCF with robot.yaml's gains and ranges, as roboreal's envs
        self.model.opt.timestep = timestep
        self.data = mujoco.MjData(self.model)
        self.decimation = decimation
        self.max_steps = max_steps
        n_obs = self.model.nq + self.model.nv
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.model.nu,), np.float32)
        self.t = 0

    def _obs(self):
        return np.concatenate([self.data.qpos, self.data.qvel])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        if self.model.nkey:
            mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        lo, hi = self.model.actuator_ctrlrange.T
        self.data.ctrl[:] = lo + (np.asarray(action) + 1) * 0.5 * (hi - lo)
        mujoco.mj_step(self.model, self.data, nstep=self.decimation)
        self.t += 1
        return self._obs(), 0.0, False, self.t >= self.max_steps, {}


def _timeit(fn, seconds: float, min_iters: int = 3) -> tuple[int, float]:
    fn()  # warm up
    iters, t0 = 0, time.perf_counter()
    while True:
        fn()
        iters += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and iters >= min_iters:
            return iters, elapsed


def bench_roboreal(task: str, n: int, seconds: float) -> float:
    env = roboreal.make(task, num_envs=n, seed=0)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    if env.spec.action_type == "discrete":
        def act():
            return torch.randint(0, env.spec.action_size, (n,), generator=gen)
    else:
        def act():
            return torch.rand(n, env.spec.action_size, generator=gen) * 2 - 1
    iters, elapsed = _timeit(lambda: env.step(act()), seconds)
    env.close()
    return n * iters / elapsed


def bench_ceiling(task: str, n: int, seconds: float, control_steps: int = 50) -> float:
    """MuJoCo alone: one rollout call of `control_steps * decimation` physics steps for N worlds.

    Same worlds (the env's per-world models, domain randomization included), same start
    state and the very controls the env produced for random actions: only the env layer
    (observations, rewards, resets, Python per step) is missing.
    """
    env = roboreal.make(task, num_envs=n, seed=0)
    env.reset()
    model, decimation = env.model, env.cfg.decimation
    models = env.sim.models if env.sim.models is not None else [model] * n
    state0 = env.sim.state.copy()
    recorded = []
    to_ctrl = env._action_to_ctrl
    env._action_to_ctrl = lambda a: recorded.append(to_ctrl(a).double().numpy().copy()) or torch.from_numpy(recorded[-1])
    gen = torch.Generator().manual_seed(0)
    for _ in range(control_steps):
        if env.spec.action_type == "discrete":
            env.step(torch.randint(0, env.spec.action_size, (n,), generator=gen))
        else:
            env.step(torch.rand(n, env.spec.action_size, generator=gen) * 2 - 1)
    nthread = env.sim.nthread
    env.close()
    ctrl = np.repeat(np.stack(recorded, axis=1)[:, :, None, :], decimation, axis=2)
    nstep = control_steps * decimation
    ctrl = ctrl.reshape(n, nstep, model.nu)
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    out_state = np.empty((n, nstep, state0.shape[1]))
    out_sensor = np.empty((n, nstep, model.nsensordata))
    with mujoco.rollout.Rollout(nthread=nthread if nthread > 1 else 0) as pool:
        def run():
            pool.rollout(models, datas, state0, ctrl, skip_checks=True, nstep=nstep, state=out_state,
                         sensordata=out_sensor)
        iters, elapsed = _timeit(run, seconds, min_iters=2)
    return n * control_steps * iters / elapsed


def bench_gym(task: str, n: int, seconds: float, mode: str) -> float:
    env = roboreal.make(task, num_envs=1, seed=0)
    robot, decimation, dt = env.robot, env.cfg.decimation, env.physics_dt
    env.close()
    fns = [lambda: PlainMujocoGymEnv(robot, decimation, dt) for _ in range(n)]
    venv = gym.vector.SyncVectorEnv(fns) if mode == "sync" else gym.vector.AsyncVectorEnv(fns, context="fork")
    venv.reset(seed=0)
    venv.action_space.seed(0)
    iters, elapsed = _timeit(lambda: venv.step(venv.action_space.sample()), seconds)
    venv.close()
    return n * iters / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["cartpole-balance", "panda-reach", "go1-walk"])
    p.add_argument("--num-envs", nargs="+", type=int, default=None,
                   help="default: 1, the core count (the largest async N), 16, 256, 1024, 4096")
    p.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    p.add_argument("--gym-max-envs", type=int, default=256, help="largest N for Gymnasium's SyncVectorEnv")
    args = p.parse_args()
    torch.set_num_threads(1)
    # AsyncVectorEnv: one process per env, at most one process per core
    async_cap = os.cpu_count() or 1
    num_envs = args.num_envs or sorted({1, async_cap, 16, 256, 1024, 4096})
    print(f"machine: {os.cpu_count()} cores; mujoco {mujoco.__version__}; torch {torch.__version__}")
    print(f"gym async: AsyncVectorEnv runs one env per process; processes capped at os.cpu_count() = {async_cap}, "
          f"so it is measured at 2 <= N <= {async_cap} envs only (equal env counts), '-' elsewhere")
    header = (f"{'task':18s} {'envs':>5s} {'roboreal':>11s} {'ceiling':>11s} {'ratio':>6s} "
              f"{'gym sync':>10s} {'x sync':>7s} {'gym async':>10s} {'x async':>7s}")
    print(header)
    print("-" * len(header))
    for task in args.tasks:
        for n in num_envs:
            ours = bench_roboreal(task, n, args.seconds)
            ceiling = bench_ceiling(task, n, args.seconds)
            row = f"{task:18s} {n:5d} {ours:11,.0f} {ceiling:11,.0f} {ours / ceiling:6.2f}"
            if n <= args.gym_max_envs:
                sync = bench_gym(task, n, args.seconds, "sync")
                row += f" {sync:10,.0f} {ours / sync:6.1f}x"
                if 1 < n <= async_cap:
                    asyn = bench_gym(task, n, args.seconds, "async")
                    row += f" {asyn:10,.0f} {ours / asyn:6.1f}x"
                else:
                    row += f" {'-':>10s} {'-':>7s}"
            else:
                row += f" {'-':>10s} {'-':>7s} {'-':>10s} {'-':>7s}"
            print(row, flush=True)
    print("env-steps/s (one env-step = one control step); ratio = roboreal / ceiling; "
          f"x sync/async = roboreal / Gymnasium vector env at the same N (async: N <= {async_cap} processes)")


if __name__ == "__main__":
    main()
