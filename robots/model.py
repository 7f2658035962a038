"""`build_model(spec)`: a robot's MuJoCo model with robot.yaml's gains and ranges in it.

`robot.yaml` is the single source of truth for the actuators. The MJCF supplies the
geometry, inertia, joint damping / armature / friction and the *kind* of each actuator;
before compiling, `build_model` writes robot.yaml's values into the model through
`mujoco.MjSpec`, so the simulator applies exactly the gains and limits that rewards, the
safety chain and deployment read. What is written:

| robot.yaml | written into |
|---|---|
| **position-controlled robot**, each actuated joint's actuator (``actuator``, else the joint name) | |
| ``kp`` | ``gainprm[0] = kp``, ``biasprm[1] = -kp`` |
| ``kd`` | ``biasprm[2] = -kd`` (``biasprm[0] = 0``) |
| ``position_limits`` | ``ctrlrange``, ``ctrllimited`` on (``inheritrange`` off) |
| ``torque_limit`` | ``forcerange = ±torque_limit``, ``forcelimited`` on |
| **force-controlled robot**, each actuated joint's actuator | |
| ``torque_limit`` | ``forcerange = ±torque_limit / abs(gear)`` and ``ctrlrange = ±torque_limit / abs(gear * gain)``, both limited: the joint torque never exceeds torque_limit (for the usual gear 1, gain 1 motor both are ±torque_limit) |
| **every joint** ``position_limits`` | the joint's ``range`` (``limited`` on), *only for joints the MJCF limits*: a joint the MJCF leaves unlimited stays unlimited (cartpole's pole is a continuous hinge; robot.yaml's ±pi there only describes angle wrapping). Angles are converted when the MJCF uses ``<compiler angle="degree">`` |
| **gripper** (the one actuator that drives none of the spec's joints, as `SimRobot` finds it) | |
| ``gripper.force_limit`` | ``forcerange = ±force_limit``, ``forcelimited`` on |
| ``gripper.open`` / ``closed`` | ``ctrlrange = [min(open, closed), max(open, closed)]``, ``ctrllimited`` on |

An actuator that cannot take a value is refused with a `ConfigError` naming the
robot.yaml field, the actuator and what it is:

* a position-controlled joint needs a position servo (``<position>``, or a ``<general>``
  with fixed gain, affine bias ``(0, -kp, -kv)`` and no dynamics) whose transmission is
  that joint, with gear 1 (kp, kd and ctrl are in joint units);
* a force-controlled joint needs a motor (fixed gain, no bias, no dynamics) on that joint;
* the gripper actuator needs a position servo with gear 1 (its ctrl is the opening).

**What tasks need and the MJCF lacks is added** (only where robot.yaml declares the place, and
only when the model has no such element; `added_elements(spec)` lists what was added), so a
third-party MJCF works unmodified:

| robot.yaml | added |
|---|---|
| ``physics_dt`` | ``opt.timestep`` |
| ``gravity_compensation: true`` | ``gravcomp = 1`` on every body of the robot's joints and below |
| ``sites.imu`` (a site or a body) | a site of that name at the body's origin (for a body); framequat, gyro and accelerometer sensors on it (``imu_quat``, ``imu_gyro``, ``imu_acc``) |
| ``sites.end_effector`` (a site or a body) | a site of that name at the body's origin (for a body) |
| ``sites.feet`` (sites, geoms or bodies) | a site of the foot's name around the foot geom (a body: its first geom); on each foot site a ``touch`` sensor ``<foot>_touch`` and world-frame ``framepos`` / ``framelinvel`` sensors ``<foot>_pos`` / ``<foot>_vel`` (foot clearance and slip terms) |
| a quadruped without a ground plane | a plane geom ``floor`` (or ``sites.floor``'s name) and a light |
| a manipulator without a ``goal`` body | a mocap body ``goal`` (a marker sphere that collides with nothing) |
| no ``home`` keyframe | ``home``: robot.yaml's default pose; a floating base is lifted so the lowest geom of the robot touches z = 0 |

Not written, because MuJoCo has no such parameter or robot.yaml does not carry it:
``velocity_limit`` (MuJoCo has no joint or actuator velocity limit: the safety chain and
the tasks' rewards enforce it), ``default`` (the MJCF's ``home`` keyframe must match it;
`tests/test_robots.py` checks), the gripper servo's gains, joint damping / armature /
frictionloss, the joints' ``actuatorfrcrange`` and the actuators' own ``damping`` /
``armature``: those stay as the MJCF has them.

Every call compiles a fresh model (1.6-1.7 ms for go1 and panda), which callers may mutate
(``opt.timestep``, randomization).

One module although it is over 400 lines: building the model and finding what it holds
(sensors by site, feet, floor, base body) follow the same naming rules and must change together.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from roboreal.config import ConfigError
from roboreal.robots.cameras import add_cameras

if TYPE_CHECKING:
    from roboreal.robots.cameras import CameraSpec
    from roboreal.robots.spec import RobotSpec

_JOINT_TRN = (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtTrn.mjTRN_JOINTINPARENT))
_LIMITED = mujoco.mjtLimited.mjLIMITED_TRUE


def build_model(spec: "RobotSpec", cameras: tuple["CameraSpec", ...] = ()) -> mujoco.MjModel:
    """The robot's model with robot.yaml's gains and ranges written in (a fresh model each call:
    tasks and randomization change its arrays in place), plus robot.yaml's cameras and a task's
    `cameras` where the MJCF lacks them."""
    return _build_with_additions(spec, tuple(cameras))[0]


def actuator_ids(spec: "RobotSpec", model: mujoco.MjModel) -> tuple[np.ndarray, int | None]:
    """(the actuated joints' actuators in spec order, the gripper's actuator or None) in a
    model `build_model` made: it has checked both exist and that the gripper's is the one
    actuator driving none of the spec's joints."""
    act = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, j.actuator or j.name)
                    for j in spec.actuated_joints], dtype=int)
    gripper = None
    if spec.gripper is not None:
        gripper = next(a for a in range(model.nu) if a not in set(act.tolist()))
    return act, gripper


# --------------------------------------------------------------------------- describing actuators


def _enum_name(enum, value) -> str:
    return enum(int(value)).name.split("_", 1)[1].lower()


def _describe(m: mujoco.MjModel, a: int) -> str:
    """What actuator `a` is, in words: kind, transmission and gear."""
    gain, bias, dyn = int(m.actuator_gaintype[a]), int(m.actuator_biastype[a]), int(m.actuator_dyntype[a])
    g, b = m.actuator_gainprm[a], m.actuator_biasprm[a]
    fixed, affine = int(mujoco.mjtGain.mjGAIN_FIXED), int(mujoco.mjtBias.mjBIAS_AFFINE)
    if dyn != int(mujoco.mjtDyn.mjDYN_NONE):
        kind = f"an actuator with {_enum_name(mujoco.mjtDyn, dyn)} dynamics"
    elif gain == fixed and bias == int(mujoco.mjtBias.mjBIAS_NONE):
        kind = "a motor"
    elif gain == fixed and bias == affine and b[0] == 0 and b[1] == -g[0]:
        kind = "a position servo"
    elif gain == fixed and bias == affine and b[0] == 0 and b[1] == 0 and b[2] == -g[0]:
        kind = "a velocity servo"
    else:
        kind = (f"a general actuator (gain {_enum_name(mujoco.mjtGain, gain)}, "
                f"bias {_enum_name(mujoco.mjtBias, bias)})")
    trn = int(m.actuator_trntype[a])
    obj = {int(mujoco.mjtTrn.mjTRN_JOINT): mujoco.mjtObj.mjOBJ_JOINT,
           int(mujoco.mjtTrn.mjTRN_JOINTINPARENT): mujoco.mjtObj.mjOBJ_JOINT,
           int(mujoco.mjtTrn.mjTRN_TENDON): mujoco.mjtObj.mjOBJ_TENDON,
           int(mujoco.mjtTrn.mjTRN_SITE): mujoco.mjtObj.mjOBJ_SITE,
           int(mujoco.mjtTrn.mjTRN_BODY): mujoco.mjtObj.mjOBJ_BODY,
           int(mujoco.mjtTrn.mjTRN_SLIDERCRANK): mujoco.mjtObj.mjOBJ_SITE}.get(trn)
    target = mujoco.mj_id2name(m, obj, int(m.actuator_trnid[a, 0])) if obj is not None else None
    trn_name = _enum_name(mujoco.mjtTrn, trn)
    where = f"on {trn_name} {target!r}" if target else f"with a {trn_name} transmission"
    gear = m.actuator_gear[a]
    gear_s = f"{gear[0]:g}" if np.all(gear[1:] == 0) else "[" + " ".join(f"{x:g}" for x in gear) + "]"
    return f"{kind} {where} with gear {gear_s}"


def _servo_problem(m: mujoco.MjModel, a: int) -> str | None:
    """Why actuator `a` is not a position servo with gear 1 (None when it is)."""
    g, b = m.actuator_gainprm[a], m.actuator_biasprm[a]
    if not (int(m.actuator_dyntype[a]) == int(mujoco.mjtDyn.mjDYN_NONE)
            and int(m.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
            and int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
            and b[0] == 0 and b[1] == -g[0]):
        return "not a position servo"
    if not (m.actuator_gear[a, 0] == 1 and np.all(m.actuator_gear[a, 1:] == 0)):
        return "its gear is not 1"
    return None


def _on_joint(m: mujoco.MjModel, a: int, jid: int) -> bool:
    return int(m.actuator_trntype[a]) in _JOINT_TRN and int(m.actuator_trnid[a, 0]) == jid


# --------------------------------------------------------------------------- writing


def _actuator_element(mspec: mujoco.MjSpec, m: mujoco.MjModel, a: int):
    name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a)
    el = mspec.actuator(name) if name else None
    return el if el is not None else mspec.actuators[a]


def _set_range(el, attr: str, lo: float, hi: float) -> None:
    setattr(el, attr, [float(lo), float(hi)])
    setattr(el, attr.replace("range", "limited"), _LIMITED)


def _set_servo(el, kp: float, kd: float) -> None:
    gain = np.array(el.gainprm, dtype=np.float64)
    bias = np.array(el.biasprm, dtype=np.float64)
    gain[0] = kp
    bias[0], bias[1], bias[2] = 0.0, -kp, -kd
    el.gainprm = gain
    el.biasprm = bias


def _build_with_additions(spec: "RobotSpec", cameras: tuple["CameraSpec", ...] = ()) -> tuple[mujoco.MjModel, list[str]]:
    path = spec.model_path
    if not path.exists():
        raise ConfigError("model", f"file not found: {path}")
    try:
        mspec = mujoco.MjSpec.from_file(str(path))
        raw = mspec.compile()  # the MJCF as written: which joints it limits, what each actuator is
    except ValueError as e:
        raise ConfigError("model", f"MJCF failed to load: {e}") from None
    model_file = spec.model
    degree = bool(mspec.compiler.degree)
    hinge, slide = int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)
    position = spec.control_mode == "position"

    # ----- joints: ranges of the joints the MJCF limits -----
    jids: list[int] = []
    for i, j in enumerate(spec.joints):
        jid = mujoco.mj_name2id(raw, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        if jid < 0:
            raise ConfigError(f"joints[{i}].name", f"{j.name!r} is not a joint of {model_file}")
        jtype = int(raw.jnt_type[jid])
        if jtype not in (hinge, slide):
            raise ConfigError(f"joints[{i}].name", f"{j.name!r} is a {_enum_name(mujoco.mjtJoint, jtype)} joint of "
                              f"{model_file}; robot.yaml joints are hinge or slide joints")
        jids.append(jid)
        if raw.jnt_limited[jid]:
            lo, hi = j.position_limits
            if degree and jtype == hinge:  # MjSpec holds angles in the MJCF's unit
                lo, hi = math.degrees(lo), math.degrees(hi)
            _set_range(mspec.joint(j.name), "range", lo, hi)

    # ----- the actuated joints' actuators -----
    joint_acts: set[int] = set()
    for i, (j, jid) in enumerate(zip(spec.joints, jids)):
        if not j.actuated:
            continue
        name = j.actuator or j.name
        a = mujoco.mj_name2id(raw, mujoco.mjtObj.mjOBJ_ACTUATOR, name)
        if a < 0:
            raise ConfigError(f"joints[{i}].actuator", f"{name!r} is not an actuator of {model_file}")
        joint_acts.add(a)
        el = _actuator_element(mspec, raw, a)
        what = f"actuator {name!r} of {model_file} is {_describe(raw, a)}"
        if position:
            problem = _servo_problem(raw, a) or (None if _on_joint(raw, a, jid) else "it does not drive that joint")
            if problem is not None:
                raise ConfigError(f"joints[{i}].kp", f"cannot be written: {what} ({problem}); a position-controlled "
                                  f"joint needs a position servo (<position>: fixed gain, affine bias (0, -kp, -kv), "
                                  f"no dynamics) on joint {j.name!r} with gear 1")
            _set_servo(el, float(j.kp), float(j.kd))
            _set_range(el, "ctrlrange", *j.position_limits)
            el.inheritrange = 0.0
            _set_range(el, "forcerange", -j.torque_limit, j.torque_limit)
        else:
            motor = (int(raw.actuator_dyntype[a]) == int(mujoco.mjtDyn.mjDYN_NONE)
                     and int(raw.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
                     and int(raw.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_NONE))
            gear, gain = float(raw.actuator_gear[a, 0]), float(raw.actuator_gainprm[a, 0])
            problem = (None if motor else "not a motor") or \
                (None if _on_joint(raw, a, jid) else "it does not drive that joint") or \
                (None if gear != 0 and gain != 0 else "its gear or gain is 0")
            if problem is not None:
                raise ConfigError(f"joints[{i}].torque_limit", f"cannot be written: {what} ({problem}); a "
                                  f"force-controlled joint needs a motor (<motor>: fixed gain, no bias, no "
                                  f"dynamics) on joint {j.name!r}")
            t = float(j.torque_limit)
            _set_range(el, "forcerange", -t / abs(gear), t / abs(gear))
            _set_range(el, "ctrlrange", -t / abs(gear * gain), t / abs(gear * gain))

    # ----- the gripper's actuator: the one that drives none of the spec's joints -----
    g = spec.gripper
    if g is not None:
        others = [a for a in range(raw.nu) if a not in joint_acts]
        names = [mujoco.mj_id2name(raw, mujoco.mjtObj.mjOBJ_ACTUATOR, a) for a in others]
        if not others:
            raise ConfigError("gripper", f"{model_file} has no actuator for the gripper (every actuator drives "
                              f"one of robot.yaml's joints)")
        if len(others) > 1:
            raise ConfigError("gripper", f"{model_file} has {len(others)} actuators that drive none of robot.yaml's "
                              f"joints ({names}); the gripper must be the only one")
        a = others[0]
        problem = _servo_problem(raw, a)
        if problem is not None:
            raise ConfigError("gripper.open", f"cannot be written: actuator {names[0]!r} of {model_file} is "
                              f"{_describe(raw, a)} ({problem}); the gripper's opening is a position command, "
                              f"which needs a position servo with gear 1")
        el = _actuator_element(mspec, raw, a)
        _set_range(el, "ctrlrange", min(g.open, g.closed), max(g.open, g.closed))
        el.inheritrange = 0.0
        _set_range(el, "forcerange", -g.force_limit, g.force_limit)

    added = _add_task_elements(spec, mspec, raw)
    twice = sorted({c.name for c in spec.cameras} & {c.name for c in cameras})
    if twice:
        raise ConfigError("env.cameras", f"names a camera robot.yaml declares: {twice}")
    added += add_cameras(mspec, raw, spec.cameras, "cameras")
    added += add_cameras(mspec, raw, cameras, "env.cameras")
    try:
        return mspec.compile(), added
    except ValueError as e:
        raise ConfigError("model", f"{model_file} failed to compile with robot.yaml's values: {e}") from None


# --------------------------------------------------------------------------- adding what tasks need

_OBJ = mujoco.mjtObj
IMU_SENSORS = {"quat": mujoco.mjtSensor.mjSENS_FRAMEQUAT, "gyro": mujoco.mjtSensor.mjSENS_GYRO,
               "acc": mujoco.mjtSensor.mjSENS_ACCELEROMETER}
# per foot site: contact force, and (world frame) position and linear velocity
FOOT_SENSORS = {"touch": mujoco.mjtSensor.mjSENS_TOUCH, "pos": mujoco.mjtSensor.mjSENS_FRAMEPOS,
                "vel": mujoco.mjtSensor.mjSENS_FRAMELINVEL}


def added_elements(spec: "RobotSpec") -> list[str]:
    """What `build_model` adds to `spec`'s MJCF (e.g. ``"sensor imu_gyro (gyro) on site imu"``)."""
    return _build_with_additions(spec)[1]


def _sensors_on_site(m: mujoco.MjModel, site: int) -> dict[int, int]:
    """sensor type -> the first sensor of that type on site `site`."""
    out: dict[int, int] = {}
    for s in range(m.nsensor):
        if int(m.sensor_objtype[s]) == int(_OBJ.mjOBJ_SITE) and int(m.sensor_objid[s]) == site:
            out.setdefault(int(m.sensor_type[s]), s)
    return out


def _free_name(m: mujoco.MjModel, obj, name: str) -> str:
    """`name`, or `name_2`, ... if the model already has an element of type `obj` so named."""
    out, k = name, 2
    while mujoco.mj_name2id(m, obj, out) >= 0:
        out, k = f"{name}_{k}", k + 1
    return out


def imu_sensor_slices(model: mujoco.MjModel, spec: "RobotSpec") -> dict[str, slice]:
    """Where the IMU's readings are in ``sensordata``: {"quat", "gyro", "acc"} -> slice of the
    frame-quaternion, gyro and accelerometer sensors on the spec's IMU site (what a real IMU
    driver reports; the training envs, the sim bridge and sim2sim read the same)."""
    site = mujoco.mj_name2id(model, _OBJ.mjOBJ_SITE, spec.sites.imu or "")
    if site < 0:
        raise ConfigError("sites.imu", f"{spec.sites.imu!r} is not a site of {spec.model}")
    on_site = _sensors_on_site(model, site)
    found: dict[str, slice] = {}
    for key, typ in IMU_SENSORS.items():
        s = on_site.get(int(typ))
        if s is None:
            raise ConfigError("sites.imu", f"{spec.model} has no {typ.name} sensor on site {spec.sites.imu!r}")
        found[key] = slice(int(model.sensor_adr[s]), int(model.sensor_adr[s] + model.sensor_dim[s]))
    return found


def foot_sensor_slices(model: mujoco.MjModel, spec: "RobotSpec", kind: str = "touch") -> list[slice]:
    """The `kind` sensor (`FOOT_SENSORS`: "touch", "pos" or "vel") of each foot (robot.yaml
    ``sites.feet`` order) in ``sensordata``."""
    typ = FOOT_SENSORS[kind]
    out = []
    for i, foot in enumerate(spec.sites.feet):
        site = mujoco.mj_name2id(model, _OBJ.mjOBJ_SITE, foot)
        s = _sensors_on_site(model, site).get(int(typ)) if site >= 0 else None
        if s is None:
            raise ConfigError(f"sites.feet[{i}]", f"{spec.model} has no {typ.name} sensor on foot site {foot!r}")
        if kind != "touch" and int(model.sensor_reftype[s]) not in (-1, int(_OBJ.mjOBJ_UNKNOWN)):
            raise ConfigError(f"sites.feet[{i}]", f"the {typ.name} sensor on foot site {foot!r} is not in the world frame")
        out.append(slice(int(model.sensor_adr[s]), int(model.sensor_adr[s] + model.sensor_dim[s])))
    return out


def foot_touch_slices(model: mujoco.MjModel, spec: "RobotSpec") -> list[slice]:
    """The touch sensor of each foot (robot.yaml ``sites.feet`` order) in ``sensordata``."""
    return foot_sensor_slices(model, spec, "touch")


def floor_geom(model: mujoco.MjModel, spec: "RobotSpec") -> str | None:
    """The ground geom's name: ``sites.floor``, else a plane named ``floor``, else the first
    named plane of the world body; None when there is none."""
    if spec.sites.floor:
        return spec.sites.floor
    if mujoco.mj_name2id(model, _OBJ.mjOBJ_GEOM, "floor") >= 0:
        return "floor"
    for g in range(model.ngeom):
        if int(model.geom_type[g]) == int(mujoco.mjtGeom.mjGEOM_PLANE) and int(model.geom_bodyid[g]) == 0:
            name = mujoco.mj_id2name(model, _OBJ.mjOBJ_GEOM, g)
            if name:
                return name
    return None


def base_body(model: mujoco.MjModel, spec: "RobotSpec") -> int:
    """The id of the body that carries the robot: ``sites.base_body``, else the parent of the
    body of the first joint in robot.yaml (an arm's base link)."""
    if spec.sites.base_body:
        return mujoco.mj_name2id(model, _OBJ.mjOBJ_BODY, spec.sites.base_body)
    jid = mujoco.mj_name2id(model, _OBJ.mjOBJ_JOINT, spec.joints[0].name)
    return int(model.body_parentid[model.jnt_bodyid[jid]])


def target_aliases(spec: "RobotSpec", model: mujoco.MjModel) -> dict[str, str]:
    """Names a task config may use for a robot's parts whatever the MJCF calls them (domain
    randomization ``targets``): ``@floor`` (the ground geom), ``@base`` (the base body)."""
    out = {}
    floor = floor_geom(model, spec)
    if floor:
        out["@floor"] = floor
    base = base_body(model, spec)
    name = mujoco.mj_id2name(model, _OBJ.mjOBJ_BODY, base) if base > 0 else None
    if name:
        out["@base"] = name
    return out


def _robot_bodies(m: mujoco.MjModel, spec: "RobotSpec") -> set[int]:
    """Bodies of the robot's joints and every body below them."""
    roots = {int(m.jnt_bodyid[mujoco.mj_name2id(m, _OBJ.mjOBJ_JOINT, j.name)]) for j in spec.joints}
    out = set()
    for b in range(1, m.nbody):
        a = b
        while a > 0 and a not in roots:
            a = int(m.body_parentid[a])
        if a in roots:
            out.add(b)
    return out


def _site_for(mspec: mujoco.MjSpec, m: mujoco.MjModel, name: str, field: str, added: list[str],
              around_geom: bool = False) -> int:
    """Site `name`'s id in `m` if there is one; else add a site so named at body `name`'s
    origin, or (`around_geom`) around geom `name` / body `name`'s first geom, sized to cover
    it. Returns -1 when a site was added (ids change at compile)."""
    if mujoco.mj_name2id(m, _OBJ.mjOBJ_SITE, name) >= 0:
        return mujoco.mj_name2id(m, _OBJ.mjOBJ_SITE, name)
    geom = mujoco.mj_name2id(m, _OBJ.mjOBJ_GEOM, name) if around_geom else -1
    body = mujoco.mj_name2id(m, _OBJ.mjOBJ_BODY, name)
    if geom < 0 and body >= 0 and around_geom:
        # a foot body's foot: its sphere, else the geom farthest from the body's origin
        geoms = sorted((int(m.geom_type[g]) != int(mujoco.mjtGeom.mjGEOM_SPHERE), -float(np.linalg.norm(m.geom_pos[g])), g)
                       for g in range(m.ngeom) if int(m.geom_bodyid[g]) == body)
        geom = geoms[0][2] if geoms else -1
    if geom >= 0:
        parent = mspec.body(mujoco.mj_id2name(m, _OBJ.mjOBJ_BODY, int(m.geom_bodyid[geom])) or "")
        if parent is None:
            raise ConfigError(field, f"the body of geom {name!r} has no name; name it, or declare a site")
        # a touch sensor counts contacts inside its site: a sphere a little larger than the geom
        parent.add_site(name=name, pos=m.geom_pos[geom].copy(), size=[float(m.geom_rbound[geom]) * 1.1 + 0.002, 0, 0],
                        group=4)
        added.append(f"site {name} around geom {mujoco.mj_id2name(m, _OBJ.mjOBJ_GEOM, geom) or f'#{geom}'}")
        return -1
    if body >= 0:
        mspec.body(name).add_site(name=name, pos=[0, 0, 0], size=[0.005, 0, 0], group=4)
        added.append(f"site {name} at the origin of body {name}")
        return -1
    raise ConfigError(field, f"{name!r} is not a site, geom or body of the model")


def _add_task_elements(spec: "RobotSpec", mspec: mujoco.MjSpec, m: mujoco.MjModel) -> list[str]:
    """Add to `mspec` (the MJCF compiled as `m`) what robot.yaml declares and the MJCF lacks."""
    added: list[str] = []
    if spec.physics_dt is not None:
        mspec.option.timestep = float(spec.physics_dt)
    if spec.gravity_compensation:
        for b in sorted(_robot_bodies(m, spec)):
            mspec.bodies[b].gravcomp = 1.0
    imu = spec.sites.imu
    if imu:
        imu_site = _site_for(mspec, m, imu, "sites.imu", added)
        _add_missing_sensors(mspec, m, imu, imu_site, IMU_SENSORS, "imu", added)
    if spec.sites.end_effector:
        _site_for(mspec, m, spec.sites.end_effector, "sites.end_effector", added)
    for i, foot in enumerate(spec.sites.feet):
        site = _site_for(mspec, m, foot, f"sites.feet[{i}]", added, around_geom=True)
        _add_missing_sensors(mspec, m, foot, site, FOOT_SENSORS, foot, added)
    if spec.kind == "quadruped" and floor_geom(m, spec) is None:
        name = spec.sites.floor or "floor"
        mspec.worldbody.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], rgba=[0.5, 0.55, 0.6, 1])
        added.append(f"geom {name} (a ground plane at z = 0)")
        if m.nlight == 0:
            mspec.worldbody.add_light(pos=[0, 0, 3], dir=[0, 0, -1],
                                      type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
            added.append("a directional light")
    if spec.kind == "manipulator" and mujoco.mj_name2id(m, _OBJ.mjOBJ_BODY, "goal") < 0:
        goal = mspec.worldbody.add_body(name="goal", mocap=True, pos=[0.5, 0, 0.3])
        goal.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.02, 0, 0], contype=0, conaffinity=0,
                      rgba=[0.1, 0.9, 0.2, 0.5], group=2)
        added.append("mocap body goal (a marker sphere)")
    if mujoco.mj_name2id(m, _OBJ.mjOBJ_KEY, "home") < 0:
        mspec.add_key(name="home", qpos=_standing_qpos(spec, m))
        added.append("keyframe home (robot.yaml's default pose" + (", base lifted onto the floor)"
                                                                   if _free_base(m) >= 0 else ")"))
    return added


def _add_missing_sensors(mspec: mujoco.MjSpec, m: mujoco.MjModel, site_name: str, site: int, sensors: dict,
                         prefix: str, added: list[str]) -> None:
    """Add to site `site_name` (id `site` in `m`, -1 when it was just added) each of `sensors`
    (key -> type) it lacks, named ``<prefix>_<key>``."""
    have = _sensors_on_site(m, site) if site >= 0 else {}
    for key, typ in sensors.items():
        if int(typ) not in have:
            name = _free_name(m, _OBJ.mjOBJ_SENSOR, f"{prefix}_{key}")
            mspec.add_sensor(name=name, type=typ, objtype=_OBJ.mjOBJ_SITE, objname=site_name)
            added.append(f"sensor {name} ({typ.name[7:].lower()}) on site {site_name}")


def _free_base(m: mujoco.MjModel) -> int:
    """The qpos address of the first free joint (a floating base), -1 without one."""
    for j in range(m.njnt):
        if int(m.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_FREE):
            return int(m.jnt_qposadr[j])
    return -1


def _standing_qpos(spec: "RobotSpec", m: mujoco.MjModel) -> list[float]:
    """qpos0 with robot.yaml's default pose (gripper open); a floating base is lifted so the
    lowest point of the robot's geoms is at z = 0 (feet on a ground plane at 0)."""
    d = mujoco.MjData(m)
    d.qpos[:] = m.qpos0
    for j in spec.joints:
        d.qpos[m.jnt_qposadr[mujoco.mj_name2id(m, _OBJ.mjOBJ_JOINT, j.name)]] = j.default
    if spec.gripper is not None:
        for g in spec.gripper.joints:
            d.qpos[m.jnt_qposadr[mujoco.mj_name2id(m, _OBJ.mjOBJ_JOINT, g)]] = spec.gripper.open
    base = _free_base(m)
    if base >= 0:
        mujoco.mj_kinematics(m, d)
        bodies = _robot_bodies(m, spec) | {int(m.jnt_bodyid[j]) for j in range(m.njnt)
                                           if int(m.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_FREE)}
        lowest = min((float(d.geom_xpos[g, 2] - geom_reach_below(m, d, g)) for g in range(m.ngeom)
                      if int(m.geom_bodyid[g]) in bodies and (m.geom_contype[g] or m.geom_conaffinity[g])),
                     default=float(d.qpos[base + 2]))
        d.qpos[base + 2] += -lowest + 1e-3
    return d.qpos.tolist()


def geom_reach_below(m: mujoco.MjModel, d: mujoco.MjData, g: int) -> float:
    """How far geom `g` reaches below its centre in world z (exact for spheres, capsules and
    boxes, the bounding sphere otherwise)."""
    t, size, R = int(m.geom_type[g]), m.geom_size[g], d.geom_xmat[g].reshape(3, 3)
    if t == int(mujoco.mjtGeom.mjGEOM_SPHERE):
        return float(size[0])
    if t == int(mujoco.mjtGeom.mjGEOM_CAPSULE):
        return float(size[0] + abs(R[2, 2]) * size[1])
    if t == int(mujoco.mjtGeom.mjGEOM_BOX):
        return float(np.abs(R[2, :]) @ size[:3])
    return float(m.geom_rbound[g])
