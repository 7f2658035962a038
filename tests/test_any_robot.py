"""Bring your own robot: robots found by name, path, search path and entry point; tasks take
the robot as a config field, check what they need, and get what the MJCF lacks added at load."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from roboreal.config import ConfigError
from roboreal.envs.registry import make
from roboreal.robots.model import added_elements, build_model, foot_touch_slices, imu_sensor_slices
from roboreal.robots.spec import ROBOTS_DIR, load_robot, robot_file, robot_reference

GO1 = ROBOTS_DIR / "go1"


def stripped_go1(folder: Path, timestep: str = "0.005", feet: str = "[FR_foot, FL_foot, RR_foot, RL_foot]",
                 name: str = "stripped_go1") -> Path:
    """robots/go1 as a third party would ship it: no sensors, no keyframe, no floor, feet as geoms
    (the foot sites removed), its own timestep."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = (GO1 / "model.xml").read_text()
    for pattern in (r"<sensor>.*?</sensor>", r"<keyframe>.*?</keyframe>", r'<geom name="floor"[^>]*/>',
                    r'<site name="(FR|FL|RR|RL)_foot"[^>]*/>'):
        xml, n = re.subn(pattern, "", xml, flags=re.S)
        assert n, pattern
    xml = re.sub(r'timestep="[0-9.]+"', f'timestep="{timestep}"', xml)
    (folder / "model.xml").write_text(xml)
    spec = (GO1 / "robot.yaml").read_text().replace("name: go1", f"name: {name}")
    spec = spec.replace("feet: [FR_foot, FL_foot, RR_foot, RL_foot]", f"feet: {feet}")
    (folder / "robot.yaml").write_text(spec)
    return folder


# ----------------------------------------------------------------------------- finding robots


def test_robots_are_found_by_name_path_folder_and_search_path(tmp_path, monkeypatch):
    assert robot_file("go1") == GO1 / "robot.yaml"
    assert robot_file(str(GO1)) == (GO1 / "robot.yaml").resolve()
    assert robot_file(str(GO1 / "robot.yaml")) == (GO1 / "robot.yaml").resolve()
    stripped_go1(tmp_path / "shelf" / "mydog", name="mydog")
    with pytest.raises(ConfigError, match=r"unknown robot 'mydog' \(available: .*ROBOREAL_ROBOT_PATH"):
        robot_file("mydog")
    monkeypatch.setenv("ROBOREAL_ROBOT_PATH", f"{tmp_path / 'nowhere'}:{tmp_path / 'shelf'}")
    assert robot_file("mydog") == tmp_path / "shelf" / "mydog" / "robot.yaml"
    spec = load_robot("mydog")
    assert spec.name == "mydog" and robot_reference(spec) == "mydog"  # the name finds it again
    monkeypatch.delenv("ROBOREAL_ROBOT_PATH")
    assert robot_reference(spec) == str(tmp_path / "shelf" / "mydog" / "robot.yaml")  # else the path
    with pytest.raises(ConfigError, match="no robot.yaml there"):
        robot_file(str(tmp_path / "missing" / "robot.yaml"))


def _install_distribution(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """A pip-installed package as importlib.metadata sees it: a .dist-info with entry points."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for mod, text in modules.items():
        (site / mod).parent.mkdir(parents=True, exist_ok=True)
        (site / mod).write_text(textwrap.dedent(text))


def test_a_robot_and_a_task_ship_as_their_own_pip_package(tmp_path):
    """Entry points `roboreal.robots` (a module with robot.yaml beside it) and `roboreal.tasks`
    (a function registering a task), seen by the CLI in a fresh process with the built-ins."""
    site = tmp_path / "site"
    stripped_go1(site / "dog_pkg", name="pipdog")
    _install_distribution(site, "dog_pkg", """
        [roboreal.robots]
        pipdog = dog_pkg
        [roboreal.tasks]
        dog_tasks = dog_pkg.tasks:register_tasks
        """, {"dog_pkg/__init__.py": "", "dog_pkg/tasks.py": """
        from roboreal.envs.registry import register
        from roboreal.envs.tasks.go1 import Go1WalkCfg, Go1WalkEnv

        def register_tasks():
            register("pipdog-walk", Go1WalkEnv, Go1WalkCfg, "walk, the pip package's dog", family="go1-walk",
                     robot="pipdog", command_vx=(-0.5, 0.5))
        """})
    code = textwrap.dedent("""
        import sys
        from roboreal.envs.registry import make, task_names
        from roboreal.agents.run_config import preset_section
        names = task_names()
        assert "pipdog-walk" in names and "go1-walk" in names and "panda-reach" in names, names
        env = make("pipdog-walk", num_envs=1)
        assert env.robot.name == "pipdog" and env.cfg.command_vx == (-0.5, 0.5)
        print(preset_section("pipdog-walk", "ppo", env.cfg.robot))
        """)
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # the family's settings were tuned on another robot, and the user is told
    assert "using those of its family go1-walk, tuned for robot go1, not pipdog" in out.stdout


def test_a_task_module_registered_before_the_built_ins_does_not_hide_them(tmp_path):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent("""
        from roboreal.envs.registry import register
        from roboreal.envs.tasks.cartpole import CartpoleCfg, CartpoleEnv
        register("my-cartpole", CartpoleEnv, CartpoleCfg, "mine", max_force=5.0)
        """))
    code = ("import my_tasks\nfrom roboreal.envs.registry import task_names\n"
            "n = task_names(); assert 'my-cartpole' in n and 'go1-walk' in n, n\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # and the CLI sees it through $ROBOREAL_TASK_MODULES
    out = subprocess.run([sys.executable, "-m", "roboreal", "tasks"], env={**env, "ROBOREAL_TASK_MODULES": "my_tasks"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "my-cartpole" in out.stdout, out.stdout + out.stderr


# ----------------------------------------------------------------------------- what a task needs


def test_a_task_refuses_a_robot_that_lacks_what_it_needs_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"kind: task go1-walk on robot panda: is 'manipulator'; the task runs on "
                                          r"quadruped robots"):
        make("go1-walk", robot="panda")
    no_imu = stripped_go1(tmp_path / "dog")
    text = (no_imu / "robot.yaml").read_text()
    (no_imu / "robot.yaml").write_text(text.replace("kind: quadruped", "kind: manipulator").replace(
        "  imu: imu\n", "").replace("  base_body: trunk\n", "  base_body: trunk\n  end_effector: trunk\n"))
    # a manipulator without an IMU may exist, but not run go1-walk
    with pytest.raises(ConfigError) as e:
        make("go1-walk", robot=str(no_imu))
    assert e.value.field == "kind" and "more: run `roboreal robot check" in str(e.value)
    (no_imu / "robot.yaml").write_text(text.replace("  imu: imu\n", ""))
    with pytest.raises(ConfigError, match=r"sites.imu: missing: quadrupeds need an IMU site"):
        load_robot(str(no_imu))  # robot.yaml itself says a quadruped has one


def test_panda_pick_needs_its_scene_and_says_so():
    from roboreal.robots.needs import unmet_needs
    from roboreal.envs.tasks.panda import PandaPickEnv

    spec = load_robot("panda")
    assert unmet_needs(spec, PandaPickEnv.needs, build_model(spec)) == []
    go1 = load_robot("go1")
    fields = [f for f, _ in unmet_needs(go1, PandaPickEnv.needs, build_model(go1))]
    assert fields[:3] == ["kind", "sites.end_effector", "gripper"] and "model" in fields


# ----------------------------------------------------------------------------- added at load


def test_a_third_party_quadruped_gets_sensors_floor_and_a_standing_pose_added(tmp_path):
    folder = stripped_go1(tmp_path / "dog", timestep="0.002")
    spec = load_robot(str(folder))
    model = build_model(spec)
    added = added_elements(spec)
    for what in ("sensor imu_quat (framequat) on site imu", "sensor imu_gyro (gyro) on site imu",
                 "site FR_foot around geom FR_foot", "sensor RL_foot_touch (touch) on site RL_foot",
                 "geom floor (a ground plane at z = 0)"):
        assert what in added, added
    assert any(a.startswith("keyframe home") for a in added)
    assert set(imu_sensor_slices(model, spec)) == {"quat", "gyro", "acc"} and len(foot_touch_slices(model, spec)) == 4
    # the derived standing pose is robot.yaml's default pose with the feet on the floor: within
    # 5 mm of the hand-tuned keyframe of the built-in go1
    home = model.key_qpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, "home")]
    ref = build_model(load_robot("go1"))
    assert abs(home[2] - ref.key_qpos[0][2]) < 0.005
    np.testing.assert_allclose(home[7:], spec.array("default"))
    # the task's rate is its own (50 Hz), not the MJCF's 2 ms timestep
    env = make("go1-walk", num_envs=2, robot=str(folder), randomization={"enabled": False}, observation_noise={})
    assert env.physics_dt == 0.005 and env.control_dt == pytest.approx(0.02)
    env.reset(seed=0)
    for _ in range(50):  # one second of zero actions: it stands on its four (added) touch sensors
        _, _, terminated, _, _ = env.step(torch.zeros(2, env.action_size))
        assert not terminated.any()
    assert env.foot_contacts.all() and (env.qpos[:, 2] > 0.25).all()
    assert env.base_height_target == pytest.approx(0.875 * home[2], rel=1e-5)
    # and its default randomization resolves @floor / @base to this model's names
    env = make("go1-walk", num_envs=1, robot=str(folder))
    geom = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert env.randomizer.targets["friction"].tolist() == [geom]


def test_built_in_robots_gain_nothing_but_what_they_lack():
    assert added_elements(load_robot("go1")) == [] and added_elements(load_robot("panda")) == []


def test_unknown_role_in_randomization_targets_is_refused():
    with pytest.raises(ValueError, match="'@table' names no part of this robot"):
        make("go1-walk", randomization={"friction": {"range": [0.5, 1.0], "targets": ["@table"]}})


def test_env_robot_is_written_down_so_the_run_finds_it_again(tmp_path, monkeypatch):
    from roboreal.agents.run_config import preset_section, resolve_config

    folder = stripped_go1(tmp_path / "dog")
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config("go1-walk", "ppo", ["env.robot=dog"])
    assert cfg.env["robot"] == str(folder / "robot.yaml")  # a relative path became absolute
    assert resolve_config("go1-walk", "ppo", ["env.robot=go1"]).env["robot"] == "go1"
    with pytest.raises(ConfigError, match="env.robot: .*'nope'"):
        resolve_config("go1-walk", "ppo", ["env.robot=nope"])
    section, note = preset_section("go1-walk", "ppo", cfg.env["robot"])
    assert section == "go1-walk" and "tuned for robot go1" in note
    assert preset_section("go1-walk", "ppo", "go1") == ("go1-walk", None)
    assert preset_section("panda-pick", "ppo")[0] is None
