"""`roboreal robot new`: a commented robot.yaml skeleton written from an MJCF.

The MJCF's joints and actuators give the joint order, limits, gains and default pose;
what it cannot say (velocity limits, often torque limits and gains) and every guess (kind,
sites, safety box) is marked ``# TODO``. One long function on purpose: it reads top to
bottom in the order of the robot.yaml it writes (joints, gripper, sites, safety, ros).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from roboreal.config import ConfigError


def _round(x: float, direction: int = 0, sig: int = 6) -> float:
    """`x` to `sig` significant digits: to nearest (0), up (1) or down (-1); rounding a
    lower limit up and an upper limit down keeps it inside the model's range."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return x
    scale = 10.0 ** (sig - 1 - math.floor(math.log10(abs(x))))
    v = x * scale
    v = math.ceil(v - 1e-6) if direction > 0 else math.floor(v + 1e-6) if direction < 0 else round(v)
    return v / scale


def _num(x: float, sig: int = 6) -> str:
    """A number as YAML reads it back as a float (PyYAML wants a dot and a signed exponent)."""
    x = _round(x, 0, sig)
    if x == 0:
        return "0.0"
    s = f"{x:.{sig}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return f"{mant if '.' in mant else mant + '.0'}e{int(exp):+d}"
    return s if "." in s else s + ".0"


def _str(s: str) -> str:
    """A YAML scalar for `s`: plain when that reads back as the same string, else quoted."""
    import yaml

    if re.fullmatch(r"[A-Za-z0-9_./-]+", s) and yaml.safe_load(s) == s:
        return s
    return json.dumps(s)


class _Yaml:
    """Lines of YAML with aligned trailing comments."""

    def __init__(self):
        self.lines: list[tuple[str, str | None]] = []

    def add(self, text: str, comment: str | None = None) -> None:
        self.lines.append((text, comment))

    def comment(self, text: str, indent: int = 0) -> None:
        for line in text.split("\n"):
            self.lines.append((" " * indent + ("# " + line if line else "#"), None))

    def text(self) -> str:
        out = []
        for text, comment in self.lines:
            out.append(f"{text:<44}  # {comment}" if comment else text)
        return "\n".join(out) + "\n"


_EE = re.compile(r"(^|[^a-z])(ee|eef|tcp|attachment|grip\w*|end_?effector)([^a-z]|$)", re.IGNORECASE)


def skeleton(mjcf: str | Path, out: str | Path, kind: str | None = None, name: str | None = None,
             source: str | None = None) -> str:
    """A commented robot.yaml for the MJCF `mjcf`, to be written at `out` (`source`: how the
    command named the MJCF, for the header)."""
    import mujoco
    import numpy as np

    from roboreal.robots.model import geom_reach_below

    mjcf, out = Path(mjcf).resolve(), Path(out).resolve()
    if not mjcf.is_file():
        raise ConfigError("MJCF", f"file not found: {mjcf}")
    try:
        mspec = mujoco.MjSpec.from_file(str(mjcf))
        m = mspec.compile()
    except ValueError as e:
        raise ConfigError("MJCF", f"{mjcf} failed to load: {e}") from None
    obj, trn, jt = mujoco.mjtObj, mujoco.mjtTrn, mujoco.mjtJoint
    hinge, slide, free_t = int(jt.mjJNT_HINGE), int(jt.mjJNT_SLIDE), int(jt.mjJNT_FREE)

    def nm(kind_, i) -> str | None:
        return mujoco.mj_id2name(m, kind_, int(i)) or None

    def is_servo(a: int) -> bool:
        g, b = m.actuator_gainprm[a], m.actuator_biasprm[a]
        return (int(m.actuator_dyntype[a]) == int(mujoco.mjtDyn.mjDYN_NONE)
                and int(m.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
                and int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE) and b[0] == 0 and b[1] == -g[0])

    def is_motor(a: int) -> bool:
        return (int(m.actuator_dyntype[a]) == int(mujoco.mjtDyn.mjDYN_NONE)
                and int(m.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
                and int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_NONE))

    # ----- the joints actuators drive through a joint transmission, in actuator (ctrl) order
    driven: list[tuple[int, int]] = []  # (joint id, actuator id)
    others: list[int] = []
    for a in range(m.nu):
        j = int(m.actuator_trnid[a, 0])
        if (int(m.actuator_trntype[a]) in (int(trn.mjTRN_JOINT), int(trn.mjTRN_JOINTINPARENT))
                and int(m.jnt_type[j]) in (hinge, slide) and j not in {d[0] for d in driven}):
            driven.append((j, a))
        else:
            others.append(a)
    if not driven:
        raise ConfigError("MJCF", f"{mjcf} has no actuator driving a hinge or slide joint (a robot.yaml needs at "
                          f"least one actuated joint)")

    servos = [is_servo(a) for _, a in driven]
    control_mode = "position" if all(servos) else "force"

    # ----- floating base and kind
    def ancestors(b: int) -> list[int]:
        out_ = [b]
        while b > 0:
            b = int(m.body_parentid[b])
            out_.append(b)
        return out_

    free_bodies = {int(m.jnt_bodyid[j]): j for j in range(m.njnt) if int(m.jnt_type[j]) == free_t}
    floating = next((b for j, _ in driven for b in ancestors(int(m.jnt_bodyid[j])) if b in free_bodies), None)
    kind_set = kind is not None
    kind = kind or ("quadruped" if floating is not None else "manipulator")
    legged = kind == "quadruped"

    # ----- the pose: the home keyframe, else qpos0
    key = mujoco.mj_name2id(m, obj.mjOBJ_KEY, "home")
    d = mujoco.MjData(m)
    d.qpos[:] = m.key_qpos[key] if key >= 0 else m.qpos0

    # ----- joint entries
    y = _Yaml()
    robot_name = name or (mspec.modelname if mspec.modelname and mspec.modelname != "MuJoCo Model"
                          else mjcf.parent.name or mjcf.stem)
    rel_model = os.path.relpath(mjcf, out.parent)
    y.comment(f"robot.yaml for {robot_name}, written by `roboreal robot new {source or mjcf}` from its MJCF.\n"
              f"Lines marked TODO are placeholders or guesses: fill them in from the datasheet, then run\n"
              f"`roboreal robot check {out.name if out.parent == Path.cwd() else out}`.")
    y.add(f"name: {_str(robot_name)}")
    y.add(f"kind: {kind}", "set by --kind" if kind_set else
          "guessed: the actuated joints hang off a free joint (a floating base)" if legged else
          "guessed: a fixed base (--kind quadruped for a legged robot)")
    y.add(f"description: {json.dumps(f'{robot_name} (TODO: describe it)')}")
    y.add(f"model: {_str(rel_model)}", "relative to this file's folder")
    y.add(f"control_mode: {control_mode}",
          "the MJCF's actuators are position servos" if control_mode == "position" else
          "TODO: the MJCF mixes position servos and motors: make them all one kind" if any(servos) else
          "the MJCF's actuators are motors")
    y.add(f"# physics_dt: {_num(m.opt.timestep)}",
          f"s; unset: the MJCF's timestep ({m.opt.timestep:g} s); tasks set their own")
    if not legged:
        has_gravcomp = bool(np.any(m.body_gravcomp > 0))
        y.add("# gravity_compensation: true",
              "the MJCF's bodies already have gravcomp" if has_gravcomp
              else "if the arm's controller cancels gravity (real arm controllers do)")
    y.add("joints:")
    y.comment("In the MJCF's actuator order (the order of the policy's actions). MuJoCo has no velocity limit:\n"
              "every velocity_limit is a TODO from the datasheet, as is a torque_limit the MJCF does not set.", 2)
    if control_mode == "force":
        y.comment("force control: kp / kd are not needed (robot.yaml's torque_limit sets the motors' ranges)", 2)
    ranges: list[float] = []
    driven_joints = set()
    for jid, a in driven:
        jname, aname = nm(obj.mjOBJ_JOINT, jid), nm(obj.mjOBJ_ACTUATOR, a)
        if jname is None:
            y.comment(f"TODO: actuator {aname or f'#{a}'} drives an unnamed joint: name it in the MJCF", 2)
            continue
        driven_joints.add(jid)
        is_hinge = int(m.jnt_type[jid]) == hinge
        y.add(f"  - name: {_str(jname)}")
        if m.jnt_limited[jid]:
            lo, hi = _round(m.jnt_range[jid, 0], 1), _round(m.jnt_range[jid, 1], -1)
            y.add(f"    position_limits: [{_num(lo)}, {_num(hi)}]", "the MJCF's joint range")
        else:
            lo, hi = (-3.14159, 3.14159) if is_hinge else (-1.0, 1.0)
            y.add(f"    position_limits: [{_num(lo)}, {_num(hi)}]", "TODO: the MJCF leaves this joint unlimited")
        ranges.append(hi - lo)
        y.add(f"    velocity_limit: {'10.0' if is_hinge else '1.0'}",
              "TODO (datasheet)")
        gear = abs(float(m.actuator_gear[a, 0])) or 1.0
        if m.actuator_forcelimited[a] and np.max(np.abs(m.actuator_forcerange[a])) > 0:
            t, why = float(np.max(np.abs(m.actuator_forcerange[a]))) * gear, "the actuator's forcerange"
        elif m.jnt_actfrclimited[jid] and np.max(np.abs(m.jnt_actfrcrange[jid])) > 0:
            t, why = float(np.max(np.abs(m.jnt_actfrcrange[jid]))), "the joint's actuatorfrcrange"
        elif is_motor(a) and m.actuator_ctrllimited[a] and np.max(np.abs(m.actuator_ctrlrange[a])) > 0:
            t = float(np.max(np.abs(m.actuator_ctrlrange[a]))) * gear * abs(float(m.actuator_gainprm[a, 0]))
            why = "the motor's ctrlrange x gear"
        else:
            t, why = 10.0 if is_hinge else 100.0, "TODO (datasheet): the MJCF sets no force limit"
        y.add(f"    torque_limit: {_num(t)}", why)
        q = float(d.qpos[m.jnt_qposadr[jid]]) if key >= 0 else 0.0
        q = min(max(_round(q), lo), hi)
        y.add(f"    default: {_num(q)}", "the MJCF's home keyframe" if key >= 0 else
              "TODO: the MJCF has no home keyframe (0, clipped into the limits)")
        if is_servo(a):
            kp, kd = float(m.actuator_gainprm[a, 0]), -float(m.actuator_biasprm[a, 2])
            y.add(f"    kp: {_num(kp)}", "TODO: MuJoCo's <position> defaults (kp 1, kv 0)" if (kp, kd) == (1.0, 0.0)
                  else "the MJCF's servo gain")
            y.add(f"    kd: {_num(kd)}", None if (kp, kd) == (1.0, 0.0) else "the MJCF's servo damping (kv)")
            if gear != 1.0 or np.any(m.actuator_gear[a, 1:] != 0):
                y.comment("TODO: this servo's gear is not 1; position control needs gear 1 (kp, kd in joint units)",
                          4)
        if aname is None:
            y.comment(f"TODO: actuator #{a} has no name: name it in the MJCF and set `actuator:` to it", 4)
        elif aname != jname:
            y.add(f"    actuator: {_str(aname)}")

    # ----- the other actuators: a gripper?
    gripper_lines: list[str] = []
    gripper_joints: list[str] = []
    for a in others:
        aname = nm(obj.mjOBJ_ACTUATOR, a) or f"#{a}"
        t_type, target = int(m.actuator_trntype[a]), int(m.actuator_trnid[a, 0])
        joints_of: list[int] = []
        if t_type == int(trn.mjTRN_TENDON):
            adr, num = int(m.tendon_adr[target]), int(m.tendon_num[target])
            joints_of = [int(m.wrap_objid[w]) for w in range(adr, adr + num)
                         if int(m.wrap_type[w]) == int(mujoco.mjtWrap.mjWRAP_JOINT)]
            what = f"tendon {nm(obj.mjOBJ_TENDON, target) or f'#{target}'}"
        elif t_type in (int(trn.mjTRN_JOINT), int(trn.mjTRN_JOINTINPARENT)):
            joints_of = [target]
            what = f"joint {nm(obj.mjOBJ_JOINT, target) or f'#{target}'} (driven by another actuator above)"
        else:
            what = f"a {trn(t_type).name[7:].lower()} transmission"
        names = [nm(obj.mjOBJ_JOINT, j) for j in joints_of]
        if gripper_lines or not joints_of or None in names or not is_servo(a) or set(joints_of) & driven_joints:
            gripper_lines.append(f"actuator {aname} ({what}) is not written by robot.yaml: TODO check it")
            continue
        j0 = joints_of[0]
        if m.actuator_ctrllimited[a]:
            lo_c, hi_c = m.actuator_ctrlrange[a]
        elif m.jnt_limited[j0]:
            lo_c, hi_c = m.jnt_range[j0]
        else:
            lo_c, hi_c = 0.0, 0.04
        force = (float(np.max(np.abs(m.actuator_forcerange[a]))) if m.actuator_forcelimited[a] else None)
        gripper_joints = [n for n in names if n]
        gripper_lines = [
            f"TODO: actuator {aname} (a position servo on {what}) drives none of the joints above. If it",
            "is the gripper, uncomment this (its ctrl is the opening; check open / closed):",
            "gripper:",
            f"  joints: [{', '.join(_str(n) for n in gripper_joints)}]",
            f"  open: {_num(max(lo_c, hi_c))}",
            f"  closed: {_num(min(lo_c, hi_c))}",
            f"  force_limit: {_num(force) if force else '10.0  # TODO from the datasheet'}",
        ]
    # unactuated hinge / slide joints of the robot (the policy may observe them)
    robot_bodies = {b for b in range(1, m.nbody)
                    if any(x in {int(m.jnt_bodyid[j]) for j in driven_joints} or x == floating
                           for x in ancestors(b)[:-1])}
    idle = [j for j in range(m.njnt) if int(m.jnt_type[j]) in (hinge, slide) and j not in driven_joints
            and nm(obj.mjOBJ_JOINT, j) and nm(obj.mjOBJ_JOINT, j) not in gripper_joints
            and int(m.jnt_bodyid[j]) in robot_bodies]
    if idle:
        y.comment("TODO: joints no actuator drives; list those the policy observes with `actuated: false`:", 2)
        for j in idle:
            lo, hi = ((_round(m.jnt_range[j, 0], 1), _round(m.jnt_range[j, 1], -1)) if m.jnt_limited[j]
                      else (-3.14159, 3.14159))
            y.comment(f"- {{name: {_str(nm(obj.mjOBJ_JOINT, j))}, position_limits: [{_num(lo)}, {_num(hi)}], "
                      f"velocity_limit: 10.0, torque_limit: 1.0, default: 0.0, actuated: false}}", 2)
    for line in gripper_lines:
        y.comment(line)

    # ----- sites
    def names_of(kind_, count) -> list[str]:
        return [n for n in (nm(kind_, i) for i in range(count)) if n]

    sites, geoms, bodies = (names_of(obj.mjOBJ_SITE, m.nsite), names_of(obj.mjOBJ_GEOM, m.ngeom),
                            names_of(obj.mjOBJ_BODY, m.nbody))
    first_body = int(m.jnt_bodyid[driven[0][0]])
    if legged and floating is not None:
        base, base_why = nm(obj.mjOBJ_BODY, floating), "the free joint's body"
    else:
        parent = int(m.body_parentid[first_body])
        base = nm(obj.mjOBJ_BODY, parent) if parent > 0 else None
        base_why = "the parent of the first joint's body"
    mujoco.mj_kinematics(m, d)
    y.add("sites:")
    imu = next((s for s in sites if "imu" in s.lower()), None)
    if imu:
        y.add(f"  imu: {_str(imu)}", "a site named like *imu*")
    elif legged and base:
        y.add(f"  imu: {_str(base)}", "TODO: no site named like *imu*: the base body's origin (a site is added)")
    elif legged:
        y.add("  imu: TODO_imu_site", "TODO: quadrupeds need an IMU site")
    if not legged:
        ee = next((s for s in sites if _EE.search(s)), None)
        if ee:
            y.add(f"  end_effector: {_str(ee)}", "a site named like *ee* / *tcp* / *attachment* / *grip*")
        else:
            last = nm(obj.mjOBJ_BODY, int(m.jnt_bodyid[driven[-1][0]]))
            ee = last
            y.add(f"  end_effector: {_str(last or 'TODO_end_effector')}",
                  "TODO: no site named like *ee* / *tcp*: the last joint's body (a site is added at its origin)")
    if legged:
        feet = list(dict.fromkeys([s for s in sites if "foot" in s.lower()] or [g for g in geoms if "foot" in g.lower()]
                                  or [b for b in bodies if "foot" in b.lower()]))
        why = "named like *foot*; in the order the task expects (go1-walk: FR, FL, RR, RL)"
        if not feet:
            lows: dict[int, tuple[float, int]] = {}
            for g in range(m.ngeom):
                b = int(m.geom_bodyid[g])
                if b in robot_bodies and b != floating:
                    z = float(d.geom_xpos[g, 2] - geom_reach_below(m, d, g))
                    if b not in lows or z < lows[b][0]:
                        lows[b] = (z, g)
            lowest = sorted(g for _, g in sorted(lows.values())[:4])  # the 4 lowest, in model order
            feet = [nm(obj.mjOBJ_GEOM, g) or nm(obj.mjOBJ_BODY, int(m.geom_bodyid[g])) for g in lowest]
            feet = [f for f in feet if f]
            why = "TODO: guessed: the 4 lowest geoms at the home pose; check them and their order"
        if feet:
            y.add(f"  feet: [{', '.join(_str(f) for f in feet)}]", why if len(feet) == 4 else
                  f"TODO: {len(feet)} found; go1-walk needs 4")
        else:
            y.add("  # feet: [FR_foot, FL_foot, RR_foot, RL_foot]", "TODO: one site, geom or body per foot")
    if base:
        y.add(f"  base_body: {_str(base)}", base_why)
    else:
        y.comment("base_body: the first joint hangs off the world body (unset: the parent of the first joint)", 2)
    plane = next((nm(obj.mjOBJ_GEOM, g) for g in range(m.ngeom) if int(m.geom_bodyid[g]) == 0
                  and int(m.geom_type[g]) == int(mujoco.mjtGeom.mjGEOM_PLANE)), None)
    if plane:
        y.comment(f"floor: {plane}   (found: the model's ground plane)", 2)
    elif legged:
        y.comment("floor: the model has no ground plane: a plane `floor` is added at z = 0", 2)

    # ----- safety
    margin = 0.05 if not ranges or min(ranges) > 0.4 else _round(min(ranges) / 8, -1, 2)
    y.add("safety:")
    y.comment("conservative defaults: loosen them (within the hardware) once the robot is tested", 2)
    y.add(f"  joint_position_margin: {_num(margin)}", "kept inside the position limits")
    y.add("  velocity_scale: 0.5", "fraction of each velocity_limit")
    y.add("  torque_scale: 0.8", "fraction of each torque_limit")
    if legged:
        y.add("  max_target_rate: 2.0", "rad/s; a walking policy needs more (go1: 15)")
        y.add("  fault_mode: damping")
        y.add("  damping_kd: 1.0")
        y.add("  tilt_limit: 0.8", "rad of roll or pitch")
    else:
        y.add("  max_target_rate: 1.0", "rad/s")
        y.add("  fault_mode: hold")
        y.add("  damping_kd: 5.0")
        ee_id = mujoco.mj_name2id(m, obj.mjOBJ_SITE, ee or "")
        if ee_id >= 0:
            pos = d.site_xpos[ee_id]
        else:
            ee_body = mujoco.mj_name2id(m, obj.mjOBJ_BODY, ee or "")
            pos = d.xpos[ee_body] if ee_body >= 0 else np.zeros(3)
        lo = [_num(round(float(p) - 0.3, 3), 4) for p in pos]
        hi = [_num(round(float(p) + 0.3, 3), 4) for p in pos]
        y.comment("TODO: the end-effector box (m, world frame): the default end-effector position +- 0.3 m", 2)
        y.add(f"  workspace_min: [{', '.join(lo)}]")
        y.add(f"  workspace_max: [{', '.join(hi)}]")
    y.add("  startup_ramp_time: 3.0", "s from the measured pose to the default pose")
    y.add("  fade_in_time: 1.0")
    y.add("  watchdog: {joint_states: 0.1, imu: 0.1, command: 0.5}" if legged
          else "  watchdog: {joint_states: 0.1, command: 0.5}", "s")

    # ----- ros
    y.add("ros:")
    y.add("  joint_states: /joint_states")
    y.add("  joint_commands: " + ("/forward_position_controller/commands" if control_mode == "position"
                                  else "/effort_controller/commands"))
    y.add("  command_interface: forward_command", "or position_gains / joint_trajectory: what the driver takes")
    if legged:
        y.add("  imu: /imu/data", "sensor_msgs/Imu")
        y.add("  cmd_vel: /cmd_vel", "geometry_msgs/Twist")
    else:
        y.add("  goal: /goal_pose", "geometry_msgs/PoseStamped")
        if gripper_joints:
            y.add("  # gripper_commands: /gripper_controller/commands", "with the gripper section")
    return y.text()
