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

Not written, because MuJoCo has no such parameter or robot.yaml does not carry it:
``velocity_limit`` (MuJoCo has no joint or actuator velocity limit: the safety chain and
the tasks' rewards enforce it), ``default`` (the MJCF's ``home`` keyframe must match it;
`tests/test_robots.py` checks), the gripper servo's gains, joint damping / armature /
frictionloss, the joints' ``actuatorfrcrange`` and the actuators' own ``damping`` /
``armature``: those stay as the MJCF has them.

The compiled model is cached per spec; every call returns a copy, which callers may
mutate (``opt.timestep``, randomization).
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from roboreal.config import ConfigError

if TYPE_CHECKING:
    from roboreal.robots.spec import RobotSpec

_JOINT_TRN = (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtTrn.mjTRN_JOINTINPARENT))
_LIMITED = mujoco.mjtLimited.mjLIMITED_TRUE


def build_model(spec: "RobotSpec") -> mujoco.MjModel:
    """The robot's model with robot.yaml's gains and ranges written in (a fresh copy)."""
    try:
        model = _compiled(spec)
    except TypeError:  # an unhashable spec (built by hand with lists): no cache
        model = _build(spec)
    return copy.copy(model)


@lru_cache(maxsize=16)
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


def _compiled(spec: "RobotSpec") -> mujoco.MjModel:
    return _build(spec)


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


def _build(spec: "RobotSpec") -> mujoco.MjModel:
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

    try:
        return mspec.compile()
    except ValueError as e:
        raise ConfigError("model", f"{model_file} failed to compile with robot.yaml's values: {e}") from None
