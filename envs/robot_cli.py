"""`roboreal robot check` and `roboreal robot new` (in envs: checking a robot means checking it
against the tasks; the skeleton writer behind `new` is `roboreal.robots.skeleton`).

    roboreal robot check go1                       # or a robot.yaml / its folder; --json
    roboreal robot check my_robot/ --task go1-walk
    roboreal robot new my_robot/model.xml --out my_robot/robot.yaml

`check` loads a robot with full validation (a `ConfigError` naming the robot.yaml field
exits 2), then reports its joints, the model's timestep, what `build_model` added to the
MJCF, the sensors, floor, base body and home pose, and for each registered task whether
the robot can run it (the task's `RobotNeeds`) at what control rate.

`new` writes a commented robot.yaml skeleton from an MJCF's joints and actuators. What the
MJCF cannot say (velocity limits, often torque limits and gains) and every guess (kind,
sites, safety box) is marked ``# TODO``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from roboreal.config import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    robot = sub.add_parser("robot", help="check a robot.yaml against its model and the tasks; write a new one")
    rsub = robot.add_subparsers(dest="robot_command", metavar="SUBCOMMAND")
    robot.set_defaults(handler=lambda args: (robot.print_help(), 2)[1])

    p = rsub.add_parser("check", help="validate a robot and report what it can run",
                        description="Load a robot with full validation and report its joints, sensors, home pose "
                                    "and which tasks it can run.")
    p.add_argument("ref", metavar="REF", help="a robot name, a robot.yaml or its folder")
    p.add_argument("--task", action="append", default=None, metavar="TASK",
                   help="only these tasks (repeatable; default: every registered task)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_check)

    p = rsub.add_parser("new", help="write a commented robot.yaml skeleton from an MJCF",
                        description="Write a robot.yaml skeleton from an MJCF's joints and actuators; values the "
                                    "MJCF cannot supply are marked TODO.")
    p.add_argument("mjcf", metavar="MJCF", help="the robot's MJCF model")
    p.add_argument("--out", default="robot.yaml", help="the robot.yaml to write (default: ./robot.yaml)")
    p.add_argument("--kind", choices=("quadruped", "manipulator"), default=None,
                   help="default: quadruped if the actuated joints hang off a free joint, else manipulator")
    p.add_argument("--name", default=None, help="robot name (default: the MJCF's model name)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(handler=cmd_new)


# =========================================================================== check


def check_report(ref: str, tasks: list[str] | None = None) -> dict:
    """The `roboreal robot check` report of robot `ref` (raises ConfigError when it does not load)."""
    import mujoco

    from roboreal.robots.model import (added_elements, base_body, build_model, floor_geom, foot_touch_slices,
                                       imu_sensor_slices)
    from roboreal.robots.needs import unmet_needs
    from roboreal.robots.spec import load_robot_file, robot_file

    path = robot_file(ref)
    spec = load_robot_file(path)
    model = build_model(spec)
    added = added_elements(spec)
    obj = mujoco.mjtObj
    warnings: list[str] = []

    mjcf_dt = float(mujoco.MjSpec.from_file(str(spec.model_path)).option.timestep)
    if spec.physics_dt is None:
        warnings.append(f"physics_dt is unset: the sim bridge steps at the MJCF's timestep {mjcf_dt:g} s; "
                        f"tasks use their own physics_dt")

    joints = [{"name": j.name, "position_limits": list(j.position_limits), "velocity_limit": j.velocity_limit,
               "torque_limit": j.torque_limit, "default": j.default, "kp": j.kp, "kd": j.kd,
               "actuated": j.actuated, "actuator": (j.actuator or j.name) if j.actuated else None}
              for j in spec.joints]

    sensors: dict = {"imu": None, "feet": []}
    if spec.sites.imu:
        sl = imu_sensor_slices(model, spec)
        sensors["imu"] = {"site": spec.sites.imu, "slices": {k: [s.start, s.stop] for k, s in sl.items()}}
    if spec.sites.feet:
        sensors["feet"] = [{"foot": f, "touch": [s.start, s.stop]}
                           for f, s in zip(spec.sites.feet, foot_touch_slices(model, spec))]

    base = base_body(model, spec)
    free = next((mujoco.mj_id2name(model, obj.mjOBJ_JOINT, j) or f"#{j}" for j in range(model.njnt)
                 if int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_FREE) and int(model.jnt_bodyid[j]) == base),
                None)

    # the home keyframe (the MJCF's, or added from robot.yaml's defaults)
    key = mujoco.mj_name2id(model, obj.mjOBJ_KEY, "home")
    qpos = model.key_qpos[key]
    home: dict = {"source": "added from robot.yaml's defaults" if any(a.startswith("keyframe home") for a in added)
                  else "the MJCF", "default_pose_within_limits": True, "base_height": None,
                  "differs_from_default": [], "outside_limits": []}
    if free is not None:
        jid = mujoco.mj_name2id(model, obj.mjOBJ_JOINT, free)
        home["base_height"] = float(qpos[model.jnt_qposadr[jid] + 2])
    for j in spec.joints:
        q = float(qpos[model.jnt_qposadr[mujoco.mj_name2id(model, obj.mjOBJ_JOINT, j.name)]])
        if abs(q - j.default) > 1e-3:
            home["differs_from_default"].append({"joint": j.name, "home": q, "default": j.default})
        lo, hi = j.position_limits
        if not lo - 1e-6 <= q <= hi + 1e-6:
            home["outside_limits"].append({"joint": j.name, "home": q, "limits": [lo, hi]})
    if home["differs_from_default"]:
        warnings.append("the MJCF's home keyframe differs from robot.yaml's default pose at "
                        + ", ".join(f"{d['joint']} ({d['home']:.4g} vs {d['default']:.4g})"
                                    for d in home["differs_from_default"]))
    if home["outside_limits"]:
        warnings.append("the home keyframe puts joints outside position_limits: "
                        + ", ".join(d["joint"] for d in home["outside_limits"]))

    from roboreal.envs.registry import task_config, task_entry, task_names

    task_report, skipped = {}, []
    for t in (tasks or task_names()):
        needs = getattr(task_entry(t).env_class, "needs", None)
        if needs is None:
            skipped.append(t)
            continue
        cfg = task_config(t)
        dt, dec = getattr(cfg, "physics_dt", None), getattr(cfg, "decimation", None)
        unmet = unmet_needs(spec, needs, model)
        task_report[t] = {"ok": not unmet, "control_hz": 1.0 / (dt * dec) if dt and dec else None,
                          "unmet": [{"field": f, "message": m} for f, m in unmet]}

    return {
        "robot": spec.name, "file": str(path), "kind": spec.kind, "control_mode": spec.control_mode,
        "model": str(spec.model_path), "joints": joints,
        "gripper": None if spec.gripper is None else {
            "joints": list(spec.gripper.joints), "open": spec.gripper.open, "closed": spec.gripper.closed,
            "force_limit": spec.gripper.force_limit},
        "timestep": {"mjcf": mjcf_dt, "physics_dt": spec.physics_dt, "simulated": float(model.opt.timestep)},
        "added": added, "sensors": sensors, "floor": floor_geom(model, spec),
        "base_body": {"name": mujoco.mj_id2name(model, obj.mjOBJ_BODY, base), "free_joint": free},
        "home": home, "tasks": task_report, "skipped_tasks": skipped, "warnings": warnings,
    }


def _g(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # plain print for the lines (names may hold brackets rich would read as markup); rich for the table
    console = Console(width=max(120, Console().width), highlight=False)
    print(f"robot {r['robot']}: {r['kind']}, {r['control_mode']} control  ({r['file']})")
    ts = r["timestep"]
    dt = (f"physics_dt {ts['physics_dt']:g} s (the MJCF's timestep: {ts['mjcf']:g} s)" if ts["physics_dt"] is not None
          else f"timestep {ts['mjcf']:g} s (the MJCF's; physics_dt unset)")
    print(f"model {r['model']}: {dt}")
    table = Table(title=f"joints ({len(r['joints'])})", title_justify="left")
    for col in ("joint", "limits", "velocity", "torque", "default", "kp", "kd", "actuator"):
        table.add_column(col, justify="left" if col in ("joint", "limits", "actuator") else "right")
    for j in r["joints"]:
        lo, hi = j["position_limits"]
        table.add_row(*(Text(s) for s in (j["name"], f"[{lo:.6g}, {hi:.6g}]", _g(j["velocity_limit"]),
                                           _g(j["torque_limit"]), _g(j["default"]), _g(j["kp"]), _g(j["kd"]),
                                           j["actuator"] or "(unactuated)")))
    console.print(table)
    if r["gripper"]:
        g = r["gripper"]
        print(f"gripper: {', '.join(g['joints'])}: open {g['open']:g}, closed {g['closed']:g}, "
              f"force limit {g['force_limit']:g}")
    print("added by build_model: " + ("nothing (the MJCF has all the tasks need)" if not r["added"] else ""))
    for a in r["added"]:
        print(f"  + {a}")
    s = r["sensors"]
    if s["imu"]:
        print(f"IMU on site {s['imu']['site']}: "
              + ", ".join(f"{k} sensordata[{a}:{b}]" for k, (a, b) in s["imu"]["slices"].items()))
    else:
        print("IMU: none (sites.imu unset)")
    print("feet touch: " + (", ".join(f"{f['foot']} [{f['touch'][0]}:{f['touch'][1]}]" for f in s["feet"])
                            or "none (sites.feet unset)"))
    b = r["base_body"]
    print(f"floor: {r['floor'] or 'none'};  base body: {b['name']} "
          + (f"(floating, free joint {b['free_joint']})" if b["free_joint"] else "(fixed base)"))
    h = r["home"]
    print(f"home keyframe ({h['source']}): default pose within limits"
          + (f"; standing base height {h['base_height']:.4g} m" if h["base_height"] is not None else ""))
    for w in r["warnings"]:
        print(f"warning: {w}")
    print("tasks:")
    width = max((len(t) for t in r["tasks"]), default=0)
    for t, rep in r["tasks"].items():
        if rep["ok"]:
            print(f"  {t:<{width}}  ok" + (f" ({rep['control_hz']:.4g} Hz control)" if rep["control_hz"] else ""))
        elif any(u["field"] == "kind" for u in rep["unmet"]):  # the rest is moot: name the fields only
            kind = next(u for u in rep["unmet"] if u["field"] == "kind")
            rest = [u["field"] for u in rep["unmet"] if u["field"] != "kind"]
            print(f"  {t:<{width}}  cannot run: kind {kind['message'].split(';')[0].removeprefix('is ')}; "
                  + kind["message"].split("; ")[1]
                  + (f" (also lacks: {', '.join(dict.fromkeys(rest))})" if rest else ""))
        else:
            print(f"  {t:<{width}}  cannot run:")
            for u in rep["unmet"]:
                print(f"  {'':<{width}}    {u['field']}: {u['message']}")
    if r["skipped_tasks"]:
        print(f"  (skipped, no robot needs declared: {', '.join(r['skipped_tasks'])})")


def cmd_check(args: argparse.Namespace) -> int:
    report = check_report(args.ref, args.task)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


# =========================================================================== new


def cmd_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        out = out / "robot.yaml"
    if out.exists() and not args.force:
        raise ConfigError("--out", f"{out} exists; pass --force to overwrite it")
    from roboreal.robots.skeleton import skeleton

    text = skeleton(args.mjcf, out, args.kind, args.name, source=args.mjcf)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    todos = sum("TODO" in line for line in text.splitlines())
    print(f"wrote {out} ({todos} lines marked TODO)")
    from roboreal.robots.spec import load_robot_file

    try:
        load_robot_file(out)
    except ConfigError as e:
        print(f"it does not load yet: {e}")
    else:
        print(f"it loads; next: fill in the TODOs and run `roboreal robot check {out}`")
    return 0
