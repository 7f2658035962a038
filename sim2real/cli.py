"""`roboreal export` and `roboreal sim2sim`."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a policy bundle (ONNX + TorchScript + manifest) from a run")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="bundle directory (default: RUN_DIR/bundle)")
    p.add_argument("--checkpoint", default="best",
                   help="best (the best evaluated policy; last if none yet) | last | a checkpoint file name")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("sim2sim", help="run an exported bundle through the deployment path (observation "
                                       "builder, runtime, safety chain, driver latency) under held-out "
                                       "perturbations vs nominal")
    p.add_argument("bundle")
    p.add_argument("--randomize", default="heavy",
                   help="none | heavy | a YAML file with randomization: and driver: sections")
    p.add_argument("--sensor-latency-ms", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="sensor -> controller latency range (perturbed run; replaces the preset's)")
    p.add_argument("--command-latency-ms", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="command -> actuator latency range (perturbed run)")
    p.add_argument("--jitter-ms", type=float, default=None, help="extra delay per message, uniform [0, J]")
    p.add_argument("--drop", type=float, default=None, help="probability a sensor message is lost")
    p.add_argument("--over-dds", action="store_true",
                   help="run the sim bridge and the policy node as separate processes over DDS, in real time "
                        "(use few --episodes: each takes its episode length in wall-clock)")
    p.add_argument("--json", default=None, help="also write the full result as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runtime", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--robot", default=None, metavar="REF",
                   help="where the bundle's robot is: a robot name, or a path to a robot.yaml or its folder "
                        "(default: the manifest's robot.source, else its name; e.g. for a bundle moved to another "
                        "machine). It must still be the robot the bundle was trained on (name, joints, checksum)")
    p.set_defaults(handler=cmd_sim2sim)


def cmd_export(args: argparse.Namespace) -> int:
    from roboreal.policy_bundle import load_bundle
    from roboreal.sim2real.bundle import export_bundle

    out = export_bundle(args.run_dir, args.out, which=args.checkpoint)
    bundle = load_bundle(out)  # verify what was written
    m = bundle.manifest
    source = m["robot"].get("source")
    robot = m["robot"]["name"] + (f" ({source})" if source and source != m["robot"]["name"] else "")
    from roboreal.agents.policy import describe_checkpoint

    t = m["training"]
    print(f"checkpoint: {args.checkpoint} -> " + describe_checkpoint(
        {"checkpoint": t["checkpoint"], "step": t["step"], "which": args.checkpoint, "eval": t.get("eval")}))
    print(f"wrote {out}: robot {robot}, {len(m['joints'])} joints, "
          f"obs {m['observation']['size']} ({len(m['observation']['terms'])} terms), action {m['action']['size']} "
          f"({m['action']['type']}), {1 / m['control']['dt']:.0f} Hz")
    return 0


def cmd_sim2sim(args: argparse.Namespace) -> int:
    from roboreal.policy_bundle import BundleError

    try:
        return _sim2sim(args)
    except BundleError as e:  # e.g. --robot names another robot than the bundle's: the mismatch, named
        import sys

        print(f"roboreal sim2sim: error: {e}", file=sys.stderr)
        return 2


def _sim2sim(args: argparse.Namespace) -> int:
    from roboreal.sim2real.sim2sim import print_report, run_sim2sim

    driver = {k: v for k, v in (("sensor_latency_ms", args.sensor_latency_ms),
                                ("command_latency_ms", args.command_latency_ms),
                                ("jitter_ms", args.jitter_ms), ("drop", args.drop)) if v is not None}
    if args.over_dds:
        from roboreal.sim2real.sim2sim import print_dds_report, run_sim2sim_over_dds

        result = run_sim2sim_over_dds(args.bundle, args.randomize, args.episodes, args.seed, driver_overrides=driver,
                                      robot=args.robot)
        print_dds_report(result)
    else:
        result = run_sim2sim(args.bundle, args.randomize, args.episodes, args.seed, args.runtime,
                             progress=not args.no_progress, driver_overrides=driver, robot=args.robot)
        print_report(result)
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return 0
