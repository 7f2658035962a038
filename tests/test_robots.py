"""Shipped robots: specs load and match their MJCF models, and the models' physics is sane
(the quadruped stands, the arm holds and tracks targets, the gripper can lift the cube)."""

from __future__ import annotations

import re
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from roboreal.config import ConfigError
from roboreal.robots.model import build_model
from roboreal.robots.spec import ROBOTS_DIR, available_robots, load_robot, load_robot_file


def _model(name: str) -> mujoco.MjModel:
    """The model the simulator runs: the MJCF with robot.yaml's gains and ranges written in."""
    return build_model(load_robot(name))


def _id(m, obj, name: str) -> int:
    i = mujoco.mj_name2id(m, obj, name)
    assert i >= 0, f"{name!r} not found"
    return i


def _sim(m, d, seconds: float) -> None:
    for _ in range(int(round(seconds / m.opt.timestep))):
        mujoco.mj_step(m, d)
    mujoco.mj_forward(m, d)  # sensors at the final state


# --------------------------------------------------------------------------- loading


def test_shipped_robots_listed():
    assert {"cartpole", "panda", "go1"} <= set(available_robots())


def _assert_actuators_match_spec(spec, m: mujoco.MjModel) -> None:
    """Every gain and range the simulator applies is robot.yaml's (see robots/model.py)."""
    raw = mujoco.MjModel.from_xml_path(str(spec.model_path))  # the MJCF as written
    driven = set()
    for j in spec.joints:
        jid = _id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        assert m.jnt_limited[jid] == raw.jnt_limited[jid], j.name  # unlimited joints stay unlimited
        if m.jnt_limited[jid]:
            np.testing.assert_allclose(m.jnt_range[jid], j.position_limits, atol=1e-12)
        if not j.actuated:
            continue
        aid = _id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, j.actuator or j.name)
        driven.add(aid)
        assert m.actuator_trnid[aid, 0] == jid
        assert m.actuator_forcelimited[aid] and m.actuator_ctrllimited[aid]
        np.testing.assert_allclose(m.actuator_forcerange[aid], [-j.torque_limit, j.torque_limit], atol=1e-12)
        if spec.control_mode == "position":
            # position servo: force = kp (ctrl - q) - kd qdot: gain = kp, bias = [0, -kp, -kd]
            assert m.actuator_gainprm[aid, 0] == j.kp
            np.testing.assert_array_equal(m.actuator_biasprm[aid, :3], [0.0, -j.kp, -j.kd])
            np.testing.assert_allclose(m.actuator_ctrlrange[aid], j.position_limits, atol=1e-12)
        else:  # a gear-1 motor: ctrl is the force
            np.testing.assert_allclose(m.actuator_ctrlrange[aid], [-j.torque_limit, j.torque_limit], atol=1e-12)
    if spec.gripper is not None:
        (aid,) = [a for a in range(m.nu) if a not in driven]
        g = spec.gripper
        np.testing.assert_allclose(m.actuator_forcerange[aid], [-g.force_limit, g.force_limit], atol=1e-12)
        np.testing.assert_allclose(m.actuator_ctrlrange[aid], [min(g.open, g.closed), max(g.open, g.closed)],
                                   atol=1e-12)


@pytest.mark.parametrize("name", ["cartpole", "panda", "go1"])
def test_shipped_robot_loads_and_matches_model(name):
    spec = load_robot(name)
    assert spec.name == name
    _assert_actuators_match_spec(spec, _model(name))


@pytest.mark.parametrize("name", ["panda", "go1"])
def test_home_keyframe_is_the_default_pose(name):
    spec = load_robot(name)
    m = _model(name)
    key = _id(m, mujoco.mjtObj.mjOBJ_KEY, "home")
    for j in spec.joints:
        jid = _id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        assert m.key_qpos[key, m.jnt_qposadr[jid]] == pytest.approx(j.default), j.name
        aid = _id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, j.actuator or j.name)
        assert m.key_ctrl[key, aid] == pytest.approx(j.default), j.name


def test_panda_layout():
    spec = load_robot("panda")
    m = _model("panda")
    assert spec.kind == "manipulator" and spec.sites.end_effector == "ee_site"
    assert [m.jnt_qposadr[_id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in spec.joint_names] == list(range(7))
    assert [m.jnt_qposadr[_id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in spec.gripper.joints] == [7, 8]
    obj = _id(m, mujoco.mjtObj.mjOBJ_JOINT, "object_joint")
    assert m.jnt_type[obj] == mujoco.mjtJoint.mjJNT_FREE and m.jnt_qposadr[obj] == 9 and m.nq == 16
    assert m.nu == 8 and m.actuator(7).name == "gripper"
    np.testing.assert_allclose(m.actuator("gripper").ctrlrange, [0.0, 0.04])
    for s in ("ee_pos", "ee_quat", "object_pos", "ee_linvel"):
        _id(m, mujoco.mjtObj.mjOBJ_SENSOR, s)
    assert m.body_mocapid[_id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")] >= 0
    _id(m, mujoco.mjtObj.mjOBJ_BODY, "bin")
    _id(m, mujoco.mjtObj.mjOBJ_CAMERA, "track")
    arm_mass = sum(m.body(f"panda_link{i}").mass[0] for i in range(8))
    assert 16.0 < arm_mass < 20.0
    assert m.opt.timestep == pytest.approx(0.005)


def test_go1_layout():
    spec = load_robot("go1")
    m = _model("go1")
    assert spec.kind == "quadruped"
    base = _id(m, mujoco.mjtObj.mjOBJ_JOINT, "floating_base")
    assert m.jnt_type[base] == mujoco.mjtJoint.mjJNT_FREE and m.jnt_qposadr[base] == 0
    legs = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf")]
    assert spec.joint_names == legs
    assert [m.jnt_qposadr[_id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in legs] == list(range(7, 19))
    assert [m.actuator(i).name for i in range(m.nu)] == legs
    for s in ("imu_gyro", "imu_acc", "imu_quat", "imu_linvel", "FR_touch", "FL_touch", "RR_touch", "RL_touch",
              "trunk_touch"):
        _id(m, mujoco.mjtObj.mjOBJ_SENSOR, s)
    assert m.body_subtreemass[_id(m, mujoco.mjtObj.mjOBJ_BODY, "trunk")] == pytest.approx(13.0, abs=1.0)
    assert m.opt.timestep == pytest.approx(0.005)


# --------------------------------------------------------------------------- physics


def test_go1_stands_at_default_pose():
    spec = load_robot("go1")
    m = _model("go1")
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, _id(m, mujoco.mjtObj.mjOBJ_KEY, "home"))
    d.ctrl[:] = spec.array("default")
    _sim(m, d, 2.0)
    assert np.isfinite(d.qpos).all()
    trunk = _id(m, mujoco.mjtObj.mjOBJ_BODY, "trunk")
    projected_gravity = d.xmat[trunk].reshape(3, 3).T @ np.array([0.0, 0.0, -1.0])
    assert projected_gravity[2] < -0.9, projected_gravity
    assert d.xpos[trunk, 2] > 0.2
    for foot in ("FR", "FL", "RR", "RL"):
        assert d.sensor(f"{foot}_touch").data[0] > 1.0, foot
    assert d.sensor("trunk_touch").data[0] == 0.0
    # standing still, not creeping or rocking
    assert np.abs(d.qvel).max() < 0.05


def _panda_at_default():
    spec = load_robot("panda")
    m = _model("panda")
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, _id(m, mujoco.mjtObj.mjOBJ_KEY, "home"))
    q0 = spec.array("default")
    d.qpos[:7] = q0
    d.ctrl[:7] = q0
    d.ctrl[m.actuator("gripper").id] = spec.gripper.open
    mujoco.mj_forward(m, d)
    return spec, m, d, q0


def test_panda_holds_default_pose():
    _, m, d, q0 = _panda_at_default()
    _sim(m, d, 2.0)
    np.testing.assert_array_less(np.abs(d.qpos[:7] - q0), 0.02)


def test_panda_tracks_offset_targets():
    _, m, d, q0 = _panda_at_default()
    target = q0 + 0.2
    d.ctrl[:7] = target
    _sim(m, d, 2.0)
    np.testing.assert_array_less(np.abs(d.qpos[:7] - target), 0.03)
    assert np.abs(d.qvel[:7]).max() < 0.05


def _ik(m, d, site: int, pos, rot, iters: int = 300) -> np.ndarray:
    """Damped least squares on the 7 arm joints: site at `pos` with orientation `rot`."""
    jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    for _ in range(iters):
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        r = d.site_xmat[site].reshape(3, 3)
        e = np.concatenate([pos - d.site_xpos[site], 0.5 * sum(np.cross(r[:, k], rot[:, k]) for k in range(3))])
        if np.linalg.norm(e) < 1e-5:
            break
        mujoco.mj_jacSite(m, d, jp, jr, site)
        jac = np.vstack([jp, jr])[:, :7]
        dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), e)
        d.qpos[:7] = np.clip(d.qpos[:7] + dq, m.jnt_range[:7, 0], m.jnt_range[:7, 1])
    mujoco.mj_forward(m, d)
    return d.qpos[:7].copy()


def test_panda_gripper_lifts_cube():
    spec, m, d, _ = _panda_at_default()
    site = _id(m, mujoco.mjtObj.mjOBJ_SITE, "ee_site")
    cube = d.sensor("object_pos").data.copy()
    down = np.diag([1.0, -1.0, -1.0])  # TCP z pointing down, fingers closing along world y
    q_lift = _ik(m, d, site, cube + [0, 0, 0.15], down)
    q_grasp = _ik(m, d, site, cube, down)
    assert np.linalg.norm(d.sensor("ee_pos").data - cube) < 1e-3
    d.qpos[7:9] = spec.gripper.open
    d.qvel[:] = 0
    d.ctrl[:7] = q_grasp
    mujoco.mj_forward(m, d)
    z0 = d.sensor("object_pos").data[2]
    gripper = m.actuator("gripper").id
    d.ctrl[gripper] = spec.gripper.closed
    _sim(m, d, 0.5)
    # the fingers stop on the 4 cm cube
    assert d.qpos[7] == pytest.approx(0.02, abs=0.003) and d.qpos[8] == pytest.approx(0.02, abs=0.003)
    d.ctrl[:7] = q_lift
    _sim(m, d, 1.5)
    obj = d.sensor("object_pos").data
    assert obj[2] - z0 > 0.05
    assert np.linalg.norm(obj - d.sensor("ee_pos").data) < 0.02  # still between the fingers


# --------------------------------------------------------------------------- validation


def _edited_copy(tmp_path: Path, name: str, edit, model_edit=None) -> Path:
    src = ROBOTS_DIR / name
    xml = (src / "model.xml").read_text()
    if model_edit is not None:
        edited = model_edit(xml)
        assert edited != xml, "the model edit changed nothing"
        xml = edited
    (tmp_path / "model.xml").write_text(xml)
    data = yaml.safe_load((src / "robot.yaml").read_text())
    edit(data)
    out = tmp_path / "robot.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_unedited_copy_loads(tmp_path):
    spec = load_robot(str(_edited_copy(tmp_path, "panda", lambda d: None)))
    assert spec.directory == str(tmp_path.resolve())


def _expect_error(path: Path, field: str) -> ConfigError:
    with pytest.raises(ConfigError, match=re.escape(field)) as info:
        load_robot_file(path)
    return info.value


def test_unknown_joint_name(tmp_path):
    def edit(d):
        d["joints"][3]["name"] = "panda_joint_typo"

    err = _expect_error(_edited_copy(tmp_path, "panda", edit), "joints[3].name")
    assert "panda_joint_typo" in str(err)


def test_missing_required_field(tmp_path):
    def edit(d):
        del d["joints"][2]["velocity_limit"]

    err = _expect_error(_edited_copy(tmp_path, "go1", edit), "joints[2].velocity_limit")
    assert "missing" in str(err)


def test_default_outside_limits(tmp_path):
    def edit(d):
        d["joints"][1]["default"] = 2.5  # panda_joint2 range is +-1.7628

    _expect_error(_edited_copy(tmp_path, "panda", edit), "joints[1].default")


def test_unknown_top_level_key(tmp_path):
    def edit(d):
        d["colour"] = "white"

    err = _expect_error(_edited_copy(tmp_path, "panda", edit), "colour")
    assert "unknown" in str(err)


def test_position_limits_wider_than_model(tmp_path):
    def edit(d):
        d["joints"][0]["position_limits"] = [-1.0, 1.0]  # FR_hip: model range is +-0.863

    _expect_error(_edited_copy(tmp_path, "go1", edit), "joints[0].position_limits")


def test_quadruped_needs_imu_watchdog(tmp_path):
    def edit(d):
        del d["safety"]["watchdog"]["imu"]

    _expect_error(_edited_copy(tmp_path, "go1", edit), "safety.watchdog.imu")


# --------------------------------------------------------------------------- robot.yaml -> model


def _calf(d: dict) -> dict:
    (j,) = [j for j in d["joints"] if j["name"] == "FR_calf_joint"]
    return j


def test_build_model_writes_robot_yaml_values(tmp_path):
    """robot.yaml is the single source of actuator truth: editing it changes the simulator."""
    def edit(d):
        c = _calf(d)
        c["kp"], c["kd"], c["torque_limit"] = 35.0, 0.7, 30.0
        c["position_limits"] = [-2.5, -1.0]  # narrower than the MJCF's stops [-2.818, -0.888]

    spec = load_robot_file(_edited_copy(tmp_path, "go1", edit))
    m = build_model(spec)
    _assert_actuators_match_spec(spec, m)
    aid = _id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, "FR_calf_joint")
    assert m.actuator_gainprm[aid, 0] == 35.0
    np.testing.assert_array_equal(m.actuator_biasprm[aid, :3], [0.0, -35.0, -0.7])
    np.testing.assert_array_equal(m.actuator_forcerange[aid], [-30.0, 30.0])
    np.testing.assert_array_equal(m.actuator_ctrlrange[aid], [-2.5, -1.0])
    np.testing.assert_array_equal(m.jnt_range[_id(m, mujoco.mjtObj.mjOBJ_JOINT, "FR_calf_joint")], [-2.5, -1.0])
    # the other legs keep the shipped values
    shipped = _model("go1")
    other = _id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, "FL_calf_joint")
    np.testing.assert_array_equal(m.actuator_gainprm[other], shipped.actuator_gainprm[other])
    np.testing.assert_array_equal(m.actuator_forcerange[other], shipped.actuator_forcerange[other])


def test_build_model_returns_a_copy():
    spec = load_robot("cartpole")
    m = build_model(spec)
    dt = m.opt.timestep
    m.opt.timestep = dt / 2
    m.actuator_forcerange[0] = [-1.0, 1.0]
    again = build_model(spec)
    assert again is not m and again.opt.timestep == dt
    np.testing.assert_array_equal(again.actuator_forcerange[0], [-10.0, 10.0])


def test_unlimited_joint_stays_unlimited():
    """cartpole's pole hinge is continuous: robot.yaml's +-pi is for wrapping, not a stop."""
    m = _model("cartpole")
    assert not m.jnt_limited[_id(m, mujoco.mjtObj.mjOBJ_JOINT, "hinge")]
    assert m.jnt_limited[_id(m, mujoco.mjtObj.mjOBJ_JOINT, "slider")]


@pytest.mark.parametrize("replacement,why", [
    ('<motor name="FR_calf_joint" joint="FR_calf_joint"/>', "a motor"),
    ('<velocity name="FR_calf_joint" joint="FR_calf_joint" kv="1"/>', "a velocity servo"),
    ('<position name="FR_calf_joint" joint="FR_calf_joint" class="calf" gear="2"/>', "gear is not 1"),
    ('<position name="FR_calf_joint" joint="FR_thigh_joint" class="calf"/>', "does not drive that joint"),
])
def test_position_robot_needs_position_servos(tmp_path, replacement, why):
    def model_edit(xml: str) -> str:
        return xml.replace('<position name="FR_calf_joint" joint="FR_calf_joint" class="calf"/>', replacement)

    err = _expect_error(_edited_copy(tmp_path, "go1", lambda d: None, model_edit), "joints[2].kp")
    assert "FR_calf_joint" in str(err) and why in str(err), str(err)


def test_force_robot_needs_motors(tmp_path):
    def model_edit(xml: str) -> str:
        return xml.replace('<motor name="slider" joint="slider" gear="1"/>',
                           '<position name="slider" joint="slider" kp="10"/>')

    err = _expect_error(_edited_copy(tmp_path, "cartpole", lambda d: None, model_edit), "joints[0].torque_limit")
    assert "'slider'" in str(err) and "a position servo" in str(err), str(err)


def test_force_robot_torque_limit_is_written(tmp_path):
    def edit(d):
        d["joints"][0]["torque_limit"] = 4.0

    def model_edit(xml: str) -> str:  # a gear-2 motor: ctrl 2 N gives the joint 4 N
        return xml.replace('gear="1"/>', 'gear="2"/>')

    m = build_model(load_robot_file(_edited_copy(tmp_path, "cartpole", edit, model_edit)))
    np.testing.assert_array_equal(m.actuator_forcerange[0], [-2.0, 2.0])
    np.testing.assert_array_equal(m.actuator_ctrlrange[0], [-2.0, 2.0])
    assert m.actuator_gear[0, 0] * m.actuator_forcerange[0, 1] == 4.0  # the joint never sees more


def test_gripper_actuator_must_be_a_position_servo(tmp_path):
    def model_edit(xml: str) -> str:
        return xml.replace('<position name="gripper" tendon="gripper_split" kp="2000" kv="40"/>',
                           '<motor name="gripper" tendon="gripper_split"/>')

    err = _expect_error(_edited_copy(tmp_path, "panda", lambda d: None, model_edit), "gripper.open")
    assert "'gripper'" in str(err) and "a motor" in str(err), str(err)


def test_gripper_values_are_written(tmp_path):
    def edit(d):
        d["gripper"].update(open=0.035, closed=0.005, force_limit=50.0)

    spec = load_robot_file(_edited_copy(tmp_path, "panda", edit))
    _assert_actuators_match_spec(spec, build_model(spec))


# --------------------------------------------------------------------------- one safety schema


def test_safety_limits_are_the_spec_limits():
    """SafetyLimits takes its fields from SafetySpec: a limit is declared in one place."""
    import dataclasses

    from roboreal.robots.spec import SafetySpec
    from roboreal.sim2real.safety.limits import SafetyLimits

    spec_fields = [f.name for f in dataclasses.fields(SafetySpec) if f.name not in ("fault_mode", "damping_kd")]
    assert [f.name for f in dataclasses.fields(SafetyLimits)] == spec_fields
    for name in ("cartpole", "panda", "go1"):
        spec = load_robot(name)
        limits = SafetyLimits.from_spec(spec)
        for k in spec_fields:
            expected = getattr(spec.safety, k)
            assert getattr(limits, k) == (tuple(expected) if isinstance(expected, list) else expected), (name, k)


@pytest.mark.parametrize("key,value,field", [
    ("velocity_scale", 1.5, "safety.velocity_scale"),
    ("max_target_rate", 0.0, "safety.max_target_rate"),
    ("damping_kd", -1.0, "safety.damping_kd"),
    ("watchdog", {"joint_states": -0.1, "imu": 0.1, "command": 0.5}, "safety.watchdog.joint_states"),
    ("plausibility", {"velocity_factor": 0.5}, "safety.plausibility.velocity_factor"),
])
def test_safety_rules_are_shared(tmp_path, key, value, field):
    """robot.yaml and a deployment's SafetyLimits refuse the same value with the same field."""
    import dataclasses

    from roboreal.sim2real.safety.limits import SafetyLimits

    def edit(d):
        d["safety"][key] = value

    err = _expect_error(_edited_copy(tmp_path, "go1", edit), field)
    assert err.field == field
    base = SafetyLimits.from_spec(load_robot("go1"))
    if key == "damping_kd":
        return  # behaviour, not a limit: robot.yaml only
    group = {"watchdog": base.watchdog, "plausibility": base.plausibility}.get(key)
    hand = (dataclasses.replace(base, **{key: dataclasses.replace(group, **value)}) if group is not None
            else dataclasses.replace(base, **{key: value}))
    with pytest.raises(ConfigError) as e:
        hand.validate()
    assert e.value.field == field
