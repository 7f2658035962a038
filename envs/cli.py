"""`roboreal tasks` and `roboreal view`."""

from __future__ import annotations

import argparse
import os


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list tasks with observation/action sizes and robot")
    p.set_defaults(handler=cmd_tasks)

    p = sub.add_parser("view", help="roll out zero or random actions and write a video (offscreen, MUJOCO_GL=egl)")
    p.add_argument("task")
    p.add_argument("--video", default=None, help="output .mp4 (default: <task>.mp4)")
    p.add_argument("--steps", type=int, default=200, help="control steps to roll out")
    p.add_argument("--actions", choices=["zero", "random"], default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("overrides", nargs="*", help="task config overrides key=value")
    p.set_defaults(handler=cmd_view)
    from roboreal.cli import IntermixedParser

    p.__class__ = IntermixedParser  # overrides may follow options


def cmd_tasks(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from roboreal.envs import make, task_names
    from roboreal.envs.registry import task_entry

    table = Table(title="roboreal tasks")
    for col in ("task", "robot", "observations", "action", "control", "episode", "description"):
        table.add_column(col)
    for name in task_names():
        env = make(name, num_envs=1)
        s = env.spec
        obs = ", ".join(f"{k} {v}" for k, v in s.observation_sizes.items())
        obs += "".join(f", image {k} {'x'.join(map(str, shape))}" for k, shape in s.image_shapes.items())
        act = f"{s.action_size} {'discrete' if s.action_type == 'discrete' else 'in [-1,1]'}"
        kinds = " or ".join(getattr(task_entry(name).env_class, "needs").kinds)
        robot = f"{s.robot} (env.robot=: any {kinds})" if s.robot else ""
        table.add_row(name, robot, obs, act, f"{1 / s.control_dt:.0f} Hz", f"{s.max_episode_steps} steps",
                      task_entry(name).description)
        env.close()
    Console(width=max(160, Console().width)).print(table)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import imageio.v2 as imageio
    import torch
    from rich.progress import track

    from roboreal.config import parse_override
    from roboreal.envs import make

    overrides = dict(parse_override(o) for o in args.overrides)
    env = make(args.task, num_envs=1, seed=args.seed, **overrides)
    out = args.video or f"{args.task}.mp4"
    gen = torch.Generator().manual_seed(args.seed)
    fps = max(1, round(1 / env.spec.control_dt))
    total = 0.0
    with imageio.get_writer(out, fps=fps, macro_block_size=1) as writer:
        writer.append_data(env.render(0, args.width, args.height))
        for _ in track(range(args.steps), description=f"rendering {args.task}"):
            if env.spec.action_type == "discrete":
                action = torch.randint(0, env.spec.action_size, (1,), generator=gen)
            elif args.actions == "random":
                action = torch.rand(1, env.spec.action_size, generator=gen) * 2 - 1
            else:
                action = torch.zeros(1, env.spec.action_size)
            _, reward, *_ = env.step(action)
            total += float(reward[0])
            writer.append_data(env.render(0, args.width, args.height))
    env.close()
    print(f"wrote {out}: {args.steps} steps at {fps} Hz, return {total:.2f}")
    return 0
