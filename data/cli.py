"""`roboreal data info|export|import-lerobot`: inspect and convert datasets.

    roboreal data info reach.hdf5
    roboreal data export reach.hdf5 --lerobot reach_lerobot/ [--fps 50] [--task-text "reach the goal"]
    roboreal data import-lerobot reach_lerobot/ --out reach_back.hdf5 [--task panda-reach]

A new dataset format adds its action here: a parser under ``data`` and a ``cmd_data_*``
handler that imports the format's module inside the handler (so ``roboreal --help`` needs
none of its dependencies) and turns its `DatasetError` into a `ConfigError`.
"""

from __future__ import annotations

import argparse

from roboreal.config import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect or convert datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = dsub.add_parser("info", help="episodes, lengths, success, labels, interventions and cameras")
    q.add_argument("file")
    q.add_argument("--all", action="store_true", help="list every episode (default: at most 40 rows)")
    q.set_defaults(handler=cmd_data_info)
    q = dsub.add_parser("export", help="write a LeRobot v3.0 dataset directory, cameras as mp4 videos "
                                  "(needs roboreal[lerobot])")
    q.add_argument("file")
    q.add_argument("--lerobot", required=True, metavar="DIR")
    q.add_argument("--obs-group", default="policy", help="group written as observation.state")
    q.add_argument("--fps", type=float, default=None, help="frame rate (default: 1 / the file's control_dt)")
    q.add_argument("--task-text", default=None, help="LeRobot task description (default: the file's task name)")
    q.add_argument("--overwrite", action="store_true", help="replace a LeRobot dataset already in DIR")
    q.set_defaults(handler=cmd_data_export)
    q = dsub.add_parser("import-lerobot", help="read a LeRobot v3.0 dataset directory into an HDF5 dataset")
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--out", required=True, help="dataset file (.hdf5) to write")
    q.add_argument("--task", default=None, help="roboreal task the demonstrations are for (what bc --task takes)")
    q.add_argument("--append", action="store_true", help="add to an existing file instead of replacing it")
    q.set_defaults(handler=cmd_data_import_lerobot)
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def cmd_data_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from roboreal.data import DatasetError, DatasetReader, describe_label_source, format_rate

    try:
        reader = DatasetReader(args.file)
    except DatasetError as e:
        raise ConfigError("file", str(e)) from None
    with reader:
        s = reader.summary()
    console = Console(width=max(120, Console().width))
    table = Table(title=f"{s['path']}: {s['task'] or '?'} ({s['source'] or '?'}, robot {s['robot'] or '?'})")
    for col in ("episode", "length", "return", "success", "labels", "interventions", "round"):
        table.add_column(col, justify="right" if col != "episode" else "left")
    rows = s["rows"]
    shown = rows if args.all or len(rows) <= 40 else rows[:20] + [None] + rows[-19:]
    for r in shown:
        if r is None:
            table.add_row("...", "", "", "", "", "", "")
            continue
        success = "unknown" if r["success"] is None else ("yes" if r["success"] else "no")
        if r["success"] is not None and r.get("success_source") not in (None, "env"):
            success += f" ({r['success_source']})"  # e.g. set by the operator on the robot
        table.add_row(r["name"], str(r["length"]), "unknown" if r["return"] is None else f"{r['return']:.2f}",
                      success, str(r["labels"]), str(r["interventions"]), "-" if r["round"] is None else str(r["round"]))
    console.print(table)
    console.print(
        f"[bold]{s['episodes']}[/] episodes, [bold]{s['steps']}[/] steps (length mean {s['mean_length']:.1f}, "
        f"min {s['min_length']}, max {s['max_length']}); success rate [bold]{format_rate(s['success_rate'])}[/]")
    console.print(
        f"expert labels [bold]{s['labels']}[/] ({describe_label_source(s['label_source'])}: what bc/dagger "
        f"train on); interventions [bold]{s['interventions']}[/] steps in {s['episodes_with_interventions']} episodes")
    known, n = s["known"], s["episodes"]
    by = ", ".join(f"{v} by {k}" for k, v in sorted(s["success_sources"].items()))
    console.print(
        f"known: rewards in {known['rewards']} of {n} episodes, success in {known['success']} of {n}"
        f"{f' ({by})' if by else ''}, next_obs in {known['next_obs']} of {n}; unknown rewards are NaN and "
        f"unknown success is absent (not counted in the success rate)")
    console.print(f"observation groups {s['obs_groups']}, action size {s['action_size']}")
    if s["images"]:  # camera, C x H x W, frames stored (obs; next_obs holds as many again)
        console.print("cameras: " + ", ".join(f"{cam} {'x'.join(map(str, row['shape']))} ({row['frames']} frames, "
                                              f"uint8 {row['compression']})" for cam, row in s["images"].items()))
    if s["skipped"]:
        console.print(f"[red]skipped {len(s['skipped'])} unreadable episodes:[/] {s['skipped']}")
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from roboreal.data import DatasetError

    try:
        from roboreal.data.lerobot import export_lerobot_v3

        res = export_lerobot_v3(args.file, args.lerobot, fps=args.fps, obs_group=args.obs_group, task=args.task_text,
                                overwrite=args.overwrite)
    except DatasetError as e:
        raise ConfigError("lerobot", str(e)) from None
    videos = f", {len(res['videos'])} video files" if res["videos"] else ""
    print(f"wrote {res['episodes']} episodes ({res['frames']} frames, {len(res['files'])} data files{videos}) to "
          f"{res['out']} (LeRobot v3.0)")
    return 0


def cmd_data_import_lerobot(args: argparse.Namespace) -> int:
    from roboreal.data import DatasetError

    try:
        from roboreal.data.lerobot import import_lerobot_v3

        res = import_lerobot_v3(args.dir, args.out, task=args.task, mode="a" if args.append else "w")
    except DatasetError as e:
        raise ConfigError("lerobot", str(e)) from None
    print(f"wrote {res['episodes']} episodes ({res['frames']} frames) to {res['out']}: observation groups "
          f"{res['obs_groups']}, action size {res['action_size']}, tasks {res['tasks']}"
          + (", cameras " + ", ".join(f"{c} {'x'.join(map(str, s))}" for c, s in res["images"].items())
             if res["images"] else "")
          + (f"; not imported: {', '.join(res['ignored'])}" if res["ignored"] else ""))
    return 0
