"""`roboreal record`: the demonstration recorder (dataset + MCAP of a robot session).

rclpy is imported only inside the handler, never here, so `roboreal --help` works on a
machine without ROS 2.
"""

from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="record a robot session: episodes for DAgger (HDF5) and the raw topics (MCAP)",
        description="Records the policy node's steps (observation, policy action, applied action, the human's "
                    "action and the intervention flag per control step) into a roboreal dataset that "
                    "`roboreal dagger --expert human --dataset FILE` trains on, and the raw topics into MCAP "
                    "(Foxglove, rosbag2). Killed at any moment, the dataset loses at most the episode in "
                    "progress. Episodes end on the policy node's ~/reset, a safety fault, a missing step, "
                    "max_episode_s, or /recorder/end_episode (std_srvs/Trigger). Every option is a ROS "
                    "parameter (roboreal/sim2real/nodes/recorder.py, config/recorder.yaml).")
    p.add_argument("--out", help="dataset file (.hdf5); an existing file needs --append (or -p out:=FILE)")
    p.add_argument("--append", action="store_true", default=None, help="add episodes to an existing dataset")
    p.add_argument("--mcap", help="MCAP file (default: OUT with .mcap; 'none': no MCAP)")
    p.add_argument("--policy-node", help="the policy node recorded (default /policy_node)")
    p.add_argument("--max-episode-s", type=float, help="s after which an episode is ended and written (0: none)")
    p.add_argument("--recover", metavar="FILE.mcap",
                   help="rewrite an MCAP cut short (or a killed recording's unindexed one) as a complete, indexed "
                        "FILE.recovered.mcap and exit (no ROS); the source's library, metadata and channels are kept")
    p.add_argument("--params", action="append", default=[], metavar="FILE.yaml",
                   help="ROS 2 params file (repeatable; later files win)")
    p.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], dest="ros_args",
                   help="standard ROS 2 arguments (-r from:=to, -p name:=value, --params-file F, --log-level L)")
    p.set_defaults(handler=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    if args.recover:
        from pathlib import Path

        from roboreal.sim2real.nodes.mcap_writer import recover_mcap

        src = Path(args.recover)
        dst = src.with_name(src.stem + ".recovered.mcap")
        try:
            res = recover_mcap(src, dst)
        except (OSError, ValueError) as e:  # a missing or non-MCAP source, an existing destination
            print(f"[recorder] error: {e}", file=sys.stderr, flush=True)
            return 2
        how = ("the source was complete" if res["complete"] else
               f"the source was cut short ({res['tear']}); every message before the cut is kept" if res["tear"] else
               "the source was a killed recording; every message it holds is kept")
        print(f"{dst}: {res['messages']} messages on {res['channels']} channels, indexed ({how})")
        return 0
    ros_args: list[str] = []
    for f in args.params:
        ros_args += ["--params-file", f]
    ros_args += list(args.ros_args)
    flags = {"out": args.out, "append": "true" if args.append else None, "mcap": args.mcap,
             "policy_node": args.policy_node, "max_episode_s": args.max_episode_s}
    ros_args.append("--ros-args")  # a new section, last, so that the flags win
    for name, value in flags.items():
        if value is not None:
            ros_args += ["-p", f"{name}:={value}"]

    from roboreal.sim2real.nodes.recorder import run  # imports rclpy

    return run(ros_args)


def main(argv: list[str] | None = None) -> int:
    from roboreal.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
