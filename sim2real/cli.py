"""`roboreal export` and `roboreal sim2sim`."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a policy bundle (ONNX + TorchScript + manifest) from a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="bundle directory (default: RUN_DIR/bundle)")
    p.add_argument("--checkpoint", default="best", help="best | last | a checkpoint file name")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("sim2sim", help="run an exported bundle under held-out perturbations vs nominal")
    p.add_argument("bundle")
    p.add_argument("--randomize", default="heavy", help="none | heavy | a YAML file of task overrides")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runtime", choices=["onnx", "torchscript"], default="onnx")
    p.set_defaults(handler=cmd_sim2sim)


def cmd_export(args: argparse.Namespace) -> int:
    from roboreal.sim2real.bundle import export_bundle, load_bundle

    out = export_bundle(args.run_dir, args.out, which=args.checkpoint)
    bundle = load_bundle(out)  # verify what was written
    m = bundle.manifest
    print(f"wrote {out}: robot {m['robot']['name']}, {len(m['joints'])} joints, "
          f"obs {m['observation']['size']} ({len(m['observation']['terms'])} terms), action {m['action']['size']} "
          f"({m['action']['type']}), {1 / m['control']['dt']:.0f} Hz")
    return 0


def cmd_sim2sim(args: argparse.Namespace) -> int:
    from roboreal.sim2real.sim2sim import print_report, run_sim2sim

    result = run_sim2sim(args.bundle, args.randomize, args.episodes, args.seed, args.runtime)
    print_report(result)
    return 0
