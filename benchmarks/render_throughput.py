"""Camera rendering throughput: image observations per second beside physics-only env-steps/s.

Measured in one run on one machine, same task scene (panda-pick: arm, table, bin, cube), same
number of envs, random actions, auto-resets included:

- physics only:  `panda-pick` env-steps/s (no camera);
- images:        `panda-pick-vision` with one camera (`front`) at each resolution: env-steps/s,
                 which is frames/s of that camera, with the renderer's speed-first settings (no
                 shadows, reflections or multisampling) on 1 thread and on one thread per core;
- model defaults: the same at 84x84 with the MJCF's own visual settings (shadows, reflections,
                 4x multisampling), the reference the speed-first settings are compared with.

On the Warp backend (`backend=warp`, on CUDA when there is a GPU, else the slow Warp CPU device), the
same camera rendered by both renderers from the same state, rendering only (no physics step), as
frames/s (renders/s x envs): the OpenGL renderer (`render.renderer=opengl`: each world's state
copied to the host and drawn one at a time, one thread per core) beside MuJoCo Warp's batch ray
tracer (`render.renderer=warp`, the default there: every world in one launch on the device).
Usage:

    MUJOCO_GL=egl python benchmarks/render_throughput.py                       # 16 envs, 32..128 px
    MUJOCO_GL=egl python benchmarks/render_throughput.py --num-envs 64 --sizes 64 84 --seconds 5
    MUJOCO_GL=egl python benchmarks/render_throughput.py --warp-only --warp-device cuda   # the warp rows only
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
    gen = torch.Generator(device=env.device).manual_seed(0)
    try:
        env.reset(seed=0)
        for _ in range(3):  # warm-up: renderer contexts are made on first use
            env.step(torch.rand(num_envs, env.action_size, generator=gen, device=env.device) * 2 - 1)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(torch.rand(num_envs, env.action_size, generator=gen, device=env.device) * 2 - 1)
            steps += 1
        return steps * num_envs / (time.perf_counter() - start)
    finally:
        env.close()


def render_frames_per_second(renderer, num_envs: int, seconds: float) -> float:
    """Frames/s of one camera: `renderer.render()` of every world, repeated for `seconds`."""
    renderer.render()  # warm-up: contexts are made and kernels loaded on first use
    renders, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or renders < 2:
        renderer.render()
        renders += 1
    return renders * num_envs / (time.perf_counter() - start)


def warp_rows(n: int, sizes: list[int], seconds: float, device: str, cores: int) -> None:
    """The Warp backend: both renderers on the same worlds, rendering only."""
    from roboreal.envs.sim.camera_renderer import CameraRenderer, RenderCfg

    physics = steps_per_second("panda-pick", n, seconds, backend="warp", device=device)
    print(f"\nwarp backend on {device}: physics only (panda-pick) {physics:,.0f} env-steps/s; rendering only "
          "(no physics step):")
    print(f"{'resolution':>10} | {'opengl, per world':>18} | {'warp batch':>18} | {'warp vs opengl':>15}")
    print(f"{'':>10} | {f'frames/s, {cores} thr':>18} | {'frames/s':>18} | {'':>15}")
    for size in sizes:
        env = roboreal.make("panda-pick-vision", num_envs=n, seed=0, backend="warp", device=device,
                            cameras=camera(size), image_observations=["front"], randomization={"enabled": False},
                            render={"renderer": "warp"})
        gl = CameraRenderer(env.sim, env.cameras, RenderCfg(nthread=cores))
        try:
            env.reset(seed=0)
            opengl = render_frames_per_second(gl, n, seconds)
            warp = render_frames_per_second(env.camera_renderer, n, seconds)
        finally:
            gl.close()
            env.close()
        print(f"{f'{size}x{size}':>10} | {opengl:>18,.0f} | {warp:>18,.0f} | {warp / opengl:>14.2f}x")


def camera(size: int) -> list[dict]:
    return [{"name": "front", "pos": [1.0, 0.0, 0.55], "lookat": [0.5, 0.0, 0.05], "fovy": 45.0,
             "width": size, "height": size}]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 84, 128])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warp-device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of the warp backend rows (default: cuda if there is one, else the Warp CPU device)")
    p.add_argument("--warp-only", action="store_true", help="only the warp backend rows")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    n = args.num_envs
    print(f"{n} envs, {cores} cores, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {args.seconds:.0f} s per cell")
    if args.warp_only:
        warp_rows(n, args.sizes, args.seconds, args.warp_device, cores)
        return
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
    warp_rows(n, args.sizes, args.seconds, args.warp_device, cores)


if __name__ == "__main__":
    main()
