"""`roboreal robot check` / `roboreal robot new` (roboreal/envs/robot_cli.py), through `roboreal.cli.main`."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from roboreal.cli import main
from roboreal.robots.skeleton import _num, _round
from roboreal.robots.spec import ROBOTS_DIR, load_robot_file


def _check(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["robot", "check", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_check_go1(capsys):
    r = _check(capsys, "go1")
    assert r["robot"] == "go1" and r["kind"] == "quadruped" and len(r["joints"]) == 12
    assert r["added"] == []  # the shipped MJCF has everything the tasks need
    assert r["tasks"]["go1-walk"]["ok"] and r["tasks"]["go1-walk"]["control_hz"] == pytest.approx(50)
    reach = r["tasks"]["panda-reach"]
    assert not reach["ok"] and "kind" in {u["field"] for u in reach["unmet"]}
    assert r["home"]["base_height"] == pytest.approx(0.32) and not r["home"]["differs_from_default"]
    assert r["base_body"] == {"name": "trunk", "free_joint": "floating_base"} and r["floor"] == "floor"
    assert set(r["sensors"]["imu"]["slices"]) == {"quat", "gyro", "acc"} and len(r["sensors"]["feet"]) == 4
    assert r["timestep"]["physics_dt"] is None and any("physics_dt is unset" in w for w in r["warnings"])


def test_check_panda_and_task_filter(capsys):
    r = _check(capsys, "panda", "--task", "panda-reach")
    assert list(r["tasks"]) == ["panda-reach"]
    assert r["tasks"]["panda-reach"] == {"ok": True, "control_hz": pytest.approx(25), "unmet": []}
    assert r["home"]["base_height"] is None and r["base_body"]["free_joint"] is None


def test_check_text_output(capsys):
    assert main(["robot", "check", "go1", "--task", "go1-walk", "--task", "panda-reach"]) == 0
    out = capsys.readouterr().out
    assert "FR_hip_joint" in out and "standing base height 0.32 m" in out
    assert re.search(r"go1-walk\s+ok \(50 Hz control\)", out)
    assert re.search(r"panda-reach\s+cannot run: kind 'quadruped'", out)


def test_check_adds_what_a_bare_mjcf_lacks(tmp_path, capsys):
    """go1 without sensors, keyframe, floor and foot sites: build_model adds them, go1-walk runs."""
    xml = (ROBOTS_DIR / "go1" / "model.xml").read_text()
    xml = re.sub(r"<sensor>.*?</sensor>", "", xml, flags=re.S)
    xml = re.sub(r"<keyframe>.*?</keyframe>", "", xml, flags=re.S)
    xml = re.sub(r'<geom name="floor".*?/>', "", xml, flags=re.S)
    xml = re.sub(r'<site name="[A-Z]{2}_foot"[^>]*/>', "", xml)
    assert "<sensor>" not in xml and 'name="floor"' not in xml and 'site name="FR_foot"' not in xml
    (tmp_path / "model.xml").write_text(xml)
    spec = yaml.safe_load((ROBOTS_DIR / "go1" / "robot.yaml").read_text())
    assert spec["sites"]["feet"] == ["FR_foot", "FL_foot", "RR_foot", "RL_foot"]  # now geom names
    (tmp_path / "robot.yaml").write_text(yaml.safe_dump(spec))

    r = _check(capsys, str(tmp_path))
    added = "\n".join(r["added"])
    for what in ("sensor imu_quat", "sensor imu_gyro", "sensor imu_acc", "site FR_foot around geom FR_foot",
                 "sensor RL_foot_touch (touch)", "geom floor", "keyframe home"):
        assert what in added, (what, r["added"])
    assert r["home"]["source"].startswith("added") and 0.2 < r["home"]["base_height"] < 0.4
    assert r["floor"] == "floor" and len(r["sensors"]["feet"]) == 4
    assert r["tasks"]["go1-walk"]["ok"]


def test_check_misspelled_joint_exits_2(tmp_path, capsys):
    text = (ROBOTS_DIR / "go1" / "robot.yaml").read_text()
    text = text.replace("name: FR_hip_joint", "name: FR_hip_jiont").replace(
        "model: model.xml", f"model: {ROBOTS_DIR / 'go1' / 'model.xml'}")
    (tmp_path / "robot.yaml").write_text(text)
    assert main(["robot", "check", str(tmp_path / "robot.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roboreal robot: error:") and "joints[0].name" in err and "FR_hip_jiont" in err


@pytest.mark.parametrize("robot, task, kind",
                         [("go1", "go1-walk", "quadruped"), ("panda", "panda-reach", "manipulator")])
def test_new_round_trip(tmp_path, capsys, robot, task, kind):
    out = tmp_path / "sub" / "robot.yaml"
    assert main(["robot", "new", str(ROBOTS_DIR / robot / "model.xml"), "--out", str(out)]) == 0
    assert "it loads" in capsys.readouterr().out
    text = out.read_text()
    assert "# TODO" in text and "velocity_limit" in text
    data = yaml.safe_load(text)
    assert data["name"] == robot and data["kind"] == kind and data["control_mode"] == "position"
    assert (out.parent / data["model"]).resolve() == (ROBOTS_DIR / robot / "model.xml").resolve()
    shipped = load_robot_file(ROBOTS_DIR / robot / "robot.yaml")
    spec = load_robot_file(out)
    assert spec.joint_names == shipped.joint_names
    assert [j.position_limits for j in spec.joints] == [j.position_limits for j in shipped.joints]
    assert [j.default for j in spec.joints] == pytest.approx([j.default for j in shipped.joints])
    if robot == "go1":
        assert data["sites"] == {"imu": "imu", "feet": ["FR_foot", "FL_foot", "RR_foot", "RL_foot"],
                                 "base_body": "trunk"}
        assert data["safety"]["tilt_limit"] == 0.8 and data["safety"]["watchdog"]["imu"] == 0.1
    else:
        assert data["sites"] == {"end_effector": "ee_site", "base_body": "panda_link0"}
        assert "# gripper:" in text and "panda_finger_joint1" in text  # the tendon gripper: a TODO block
        lo, hi = data["safety"]["workspace_min"], data["safety"]["workspace_max"]
        assert all(h - l == pytest.approx(0.6) for l, h in zip(lo, hi))
    r = _check(capsys, str(out), "--task", task)
    assert r["tasks"][task]["ok"], r["tasks"][task]


def test_new_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "robot.yaml"
    out.write_text("keep me\n")
    mjcf = str(ROBOTS_DIR / "go1" / "model.xml")
    assert main(["robot", "new", mjcf, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep me\n"
    assert main(["robot", "new", mjcf, "--out", str(out), "--force", "--kind", "manipulator", "--name", "dog"]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["name"] == "dog" and data["kind"] == "manipulator" and "set by --kind" in out.read_text()


def test_numbers_read_back_as_floats():
    for x in (0.0, 1.0, -2.5, 1e-5, 123456789.0, 3.14159265, -0.0698):
        s = _num(x)
        assert isinstance(yaml.safe_load(s), float) and yaml.safe_load(s) == pytest.approx(x, rel=1e-5), s
    assert _round(1.23456789, 1) == 1.23457 and _round(1.23456789, -1) == 1.23456  # limits round inwards
    assert _round(-1.23456789, 1) == -1.23456
