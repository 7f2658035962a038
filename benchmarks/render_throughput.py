"""Camera rendering throughput: image observations per second beside physics-only env-steps/s.

Measured in one run on one machine, same task scene (panda-pick: arm, table, bin, cube), same
number of envs, random actions, auto-resets included:

- physics only:  `panda-pick` env-steps/s (no camera);
- images:        `panda-pick-vision` with one camera (`front`) at each resolution: env-steps/s,
                 which is frames/s of that camera, with the renderer's speed-first settings (no
                 shadows, reflections or multisampling) on 1 thread and on one thread per core;
- model defaults: the same at 84x84 with the MJCF's own visual settings (shadows, reflections,
                 4x multisampling), the reference the speed-first settings are compared with.

The Warp backend's batch renderer needs a CUDA device; on a machine without one it is reported as
not measured. Usage:

    MUJOCO_GL=egl python benchmarks/render_throughput.py                       # 16 envs, 32..128 px
    MUJOCO_GL=egl python benchmarks/render_throughput.py --num-envs 64 --sizes 64 84 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

import roboreal  # noqa: E402

torch.set_num_threads(1)


def steps_per_second(task: str, num_envs: int, seconds: float, **overrides) -> float:
    env = roboreal.make(task, num_envs=num_envs, seed=0, **overrides)
    gen = torch.Generator().manual_seed(0)
    try:
        env.reset(seed=0)
        for _ in range(3):  # warm-up: renderer contexts are made on first use
            env.step(torch.rand(num_envs, env.action_size, generator=gen) * 2 - 1)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(torch.rand(num_envs, env.action_size, generator=gen) * 2 - 1)
            steps += 1
        return steps * num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def camera(size: int) -> list[dict]:
    return [{"name": "front", "pos": [1.0, 0.0, 0.55], "lookat": [0.5, 0.0, 0.05], "fovy": 45.0,
             "width": size, "height": size}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 84, 128])
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    n = args.num_envs
    print(f"{n} envs, {cores} cores, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {args.seconds:.0f} s per cell")
    physics = steps_per_second("panda-pick", n, args.seconds)
    print(f"physics only (panda-pick): {physics:,.0f} env-steps/s\n")
    vision = {"image_observations": ["front"], "randomization": {"enabled": False}}
    print(f"{'resolution':>10} | {'1 thread':>18} | {f'{cores} threads':>18} | {'vs physics only':>15}")
    print(f"{'':>10} | {'frames/s':>18} | {'frames/s':>18} | {'':>15}")
    for size in args.sizes:
        one = steps_per_second("panda-pick-vision", n, args.seconds, cameras=camera(size), render={"nthread": 1},
                               **vision)
        many = steps_per_second("panda-pick-vision", n, args.seconds, cameras=camera(size),
                                render={"nthread": cores}, **vision)
        print(f"{f'{size}x{size}':>10} | {one:>18,.0f} | {many:>18,.0f} | {many / physics:>14.2f}x")
    size = 84
    quality = {"shadows": True, "reflections": True, "multisample": True, "nthread": cores}
    slow = steps_per_second("panda-pick-vision", n, min(args.seconds, 3.0), cameras=camera(size), render=quality,
                            **vision)
    fast = steps_per_second("panda-pick-vision", n, args.seconds, cameras=camera(size), render={"nthread": cores},
                            **vision)
    print(f"\n84x84, {cores} threads: model defaults (shadows, reflections, 4x MSAA) {slow:,.1f} frames/s, "
          f"speed-first {fast:,.0f} frames/s: {fast / slow:.0f}x")
    print("warp batch renderer: not measured (needs a CUDA device)" if not torch.cuda.is_available() else
          "warp batch renderer: not implemented yet (the Warp backend renders through the C renderer, per world)")


if __name__ == "__main__":
    main()
