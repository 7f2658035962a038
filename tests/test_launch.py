"""`roboreal launch`: XML launch files -> exact command lines, and process supervision."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from roboreal.sim2real.launching import PACKAGE_DIR, LaunchError, plan_launch
from ros_helpers import Process, wait_until

PY = sys.executable
ROBOREAL = [PY, "-m", "roboreal"]


def write(path: Path, xml: str) -> Path:
    path.write_text(textwrap.dedent(xml).strip() + "\n")
    return path


def cmds(plan) -> dict[str, list[str]]:
    return {p.name: p.cmd for p in plan.processes}


# ----------------------------------------------------------------------------------------
# Planning: what would run
# ----------------------------------------------------------------------------------------
def test_args_defaults_overrides_var_and_let(tmp_path):
    f = write(tmp_path / "a.launch.xml", """
        <launch>
          <arg name="robot" default="panda" description="which robot"/>
          <arg name="rate" default="200"/>
          <let name="node" value="$(var robot)_bridge"/>
          <node pkg="roboreal" exec="sim-bridge" name="$(var node)">
            <param name="robot" value="$(var robot)"/>
            <param name="publish_rate" value="$(var rate)"/>
          </node>
        </launch>""")
    plan = plan_launch(f)
    assert cmds(plan) == {"panda_bridge": ROBOREAL + [
        "sim-bridge", "--ros-args", "-r", "__node:=panda_bridge", "-p", "robot:=panda", "-p", "publish_rate:=200"]}
    plan = plan_launch(f, ["robot:=go1", "rate:=500"])
    assert cmds(plan) == {"go1_bridge": ROBOREAL + [
        "sim-bridge", "--ros-args", "-r", "__node:=go1_bridge", "-p", "robot:=go1", "-p", "publish_rate:=500"]}
    assert plan.args == {"robot": "go1", "rate": "500"}


def test_unknown_and_missing_args_are_errors_naming_them(tmp_path):
    f = write(tmp_path / "a.launch.xml", """
        <launch>
          <arg name="robot" description="which robot"/>
          <executable cmd="echo $(var robot)"/>
        </launch>""")
    with pytest.raises(LaunchError, match="missing required launch argument 'robot'"):
        plan_launch(f)
    with pytest.raises(LaunchError, match="unknown launch argument 'robt'"):
        plan_launch(f, {"robot": "go1", "robt": "go1"})
    assert cmds(plan_launch(f, {"robot": "go1"})) == {"echo": ["echo", "go1"]}
    with pytest.raises(LaunchError, match="launch arguments are name:=value"):
        plan_launch(f, ["robot=go1"])


def test_if_unless_groups_and_namespaces(tmp_path):
    f = write(tmp_path / "g.launch.xml", """
        <launch>
          <arg name="sim" default="true"/>
          <arg name="debug" default="false"/>
          <group if="$(var sim)">
            <push-ros-namespace namespace="robot1"/>
            <let name="inner" value="x"/>
            <node pkg="roboreal" exec="sim-bridge" name="bridge"/>
            <group>
              <push-ros-namespace namespace="arm"/>
              <node pkg="roboreal" exec="sim-bridge" name="nested"/>
              <node pkg="roboreal" exec="sim-bridge" name="absolute" namespace="/top"/>
            </group>
            <node pkg="roboreal" exec="sim-bridge" name="relative" namespace="sub"/>
          </group>
          <node pkg="roboreal" exec="sim-bridge" name="real_robot_only" unless="$(var sim)"/>
          <executable cmd="echo debug" name="debugger" if="$(var debug)"/>
          <executable cmd="echo $(var inner)" name="leak" if="false"/>
        </launch>""")
    plan = plan_launch(f)
    c = cmds(plan)
    assert list(c) == ["bridge", "nested", "absolute", "relative"]
    assert c["bridge"] == ROBOREAL + ["sim-bridge", "--ros-args", "-r", "__node:=bridge", "-r", "__ns:=/robot1"]
    assert c["nested"][-2:] == ["-r", "__ns:=/robot1/arm"]
    assert c["absolute"][-2:] == ["-r", "__ns:=/top"]
    assert c["relative"][-2:] == ["-r", "__ns:=/robot1/sub"]
    assert plan.processes[1].namespace == "/robot1/arm"
    c = cmds(plan_launch(f, {"sim": "false", "debug": "1"}))
    assert list(c) == ["real_robot_only", "debugger"]
    assert c["real_robot_only"] == ROBOREAL + ["sim-bridge", "--ros-args", "-r", "__node:=real_robot_only"]
    # a <let> inside a (scoped) group does not leak out of it
    f2 = write(tmp_path / "leak.launch.xml", """
        <launch>
          <group><let name="inner" value="x"/></group>
          <executable cmd="echo $(var inner)"/>
        </launch>""")
    with pytest.raises(LaunchError, match="no launch argument or <let> named 'inner'"):
        plan_launch(f2)
    with pytest.raises(LaunchError, match=r"if='\$\(var sim\)' evaluates to 'maybe', expected true, false, 1 or 0"):
        plan_launch(f, {"sim": "maybe"})


def test_includes_with_args_params_inline_and_from_yaml_and_remaps(tmp_path):
    params = tmp_path / "bridge.yaml"
    params.write_text("/**:\n  ros__parameters:\n    publish_rate: 300.0\n")
    write(tmp_path / "robot.launch.xml", """
        <launch>
          <arg name="robot"/>
          <arg name="params" default="$(dirname)/bridge.yaml"/>
          <arg name="ns" default=""/>
          <node pkg="roboreal" exec="sim-bridge" name="$(var robot)_bridge" namespace="$(var ns)">
            <param from="$(var params)"/>
            <param name="robot" value="$(var robot)"/>
            <param name="friction_scale_range" value="0.9,1.1" value-sep=","/>
            <param name="limits">
              <param name="rate" value="2.5"/>
            </param>
            <remap from="/joint_states" to="joint_states"/>
            <env name="MY_VAR" value="$(var robot)"/>
          </node>
        </launch>""")
    top = write(tmp_path / "top.launch.xml", """
        <launch>
          <arg name="second" default="go1"/>
          <set-parameter name="use_sim_time" value="false"/>
          <set-remap from="/cmd_vel" to="/teleop/cmd_vel"/>
          <include file="$(dirname)/robot.launch.xml">
            <arg name="robot" value="panda"/>
            <arg name="ns" value="left"/>
          </include>
          <group>
            <push-ros-namespace namespace="right"/>
            <include file="robot.launch.xml">
              <arg name="robot" value="$(var second)"/>
            </include>
          </group>
        </launch>""")
    plan = plan_launch(top, {"second": "cartpole"})
    c = cmds(plan)
    tail = ["-p", "friction_scale_range:=[0.9, 1.1]", "-p", "limits.rate:=2.5",
            "-r", "/cmd_vel:=/teleop/cmd_vel", "-r", "/joint_states:=joint_states"]
    assert c["panda_bridge"] == ROBOREAL + [
        "sim-bridge", "--ros-args", "-r", "__node:=panda_bridge", "-r", "__ns:=/left",
        "-p", "use_sim_time:=false", "--params-file", str(params), "-p", "robot:=panda", *tail]
    assert c["cartpole_bridge"] == ROBOREAL + [
        "sim-bridge", "--ros-args", "-r", "__node:=cartpole_bridge", "-r", "__ns:=/right",
        "-p", "use_sim_time:=false", "--params-file", str(params), "-p", "robot:=cartpole", *tail]
    assert plan.processes[0].env["MY_VAR"] == "panda"
    # an argument declared only by an included file may be given on the command line (it is
    # global, as with ros2 launch)
    other = tmp_path / "other.yaml"
    other.write_text("{}\n")
    plan = plan_launch(top, {"params": str(other)})
    assert all(p.cmd[p.cmd.index("--params-file") + 1] == str(other) for p in plan.processes)
    # an include argument the included file does not declare is an error naming it
    bad = write(tmp_path / "bad.launch.xml", """
        <launch>
          <include file="$(dirname)/robot.launch.xml">
            <arg name="robot" value="go1"/><arg name="robto" value="go1"/>
          </include>
        </launch>""")
    with pytest.raises(LaunchError, match="robot.launch.xml has no launch argument 'robto'"):
        plan_launch(bad)
    missing = write(tmp_path / "missing.launch.xml", """
        <launch><include file="$(dirname)/robot.launch.xml"/></launch>""")
    with pytest.raises(LaunchError, match="missing required launch argument 'robot'"):
        plan_launch(missing)


def test_an_empty_params_file_argument_adds_no_params_file(tmp_path):
    """<param from="$(var params_file)"/> with the argument left at "": no --params-file
    (ros2 launch skips it too); given a file, it is passed."""
    params = write(tmp_path / "p.yaml", "/**:\n  ros__parameters: {seed: 3}")
    f = write(tmp_path / "o.launch.xml", """
        <launch>
          <arg name="params_file" default=""/>
          <node pkg="roboreal" exec="sim-bridge" name="b">
            <param from="$(var params_file)"/>
            <param name="robot" value="go1"/>
          </node>
        </launch>""")
    assert cmds(plan_launch(f)) == {"b": ROBOREAL + ["sim-bridge", "--ros-args", "-r", "__node:=b", "-p", "robot:=go1"]}
    assert cmds(plan_launch(f, {"params_file": str(params)}))["b"][-4:] == [
        "--params-file", str(params), "-p", "robot:=go1"]
    with pytest.raises(LaunchError, match="parameter file not found"):
        plan_launch(f, {"params_file": str(tmp_path / "missing.yaml")})


def test_executable_command_splitting_and_substitutions(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOREAL_TEST_WORDS", "two words")
    f = write(tmp_path / "e.launch.xml", """
        <launch>
          <arg name="msg" default="hello world"/>
          <executable cmd="python3 -c 'print(1)' $(var msg) --x=$(env ROBOREAL_TEST_WORDS)" name="py"/>
          <executable cmd="echo $(optenv ROBOREAL_UNSET_VAR fallback) $(eval '2 * 3') $(find-pkg-share roboreal)"/>
          <executable cmd="echo a" launch-prefix="nice -n 5" on_exit="shutdown" respawn="false"/>
          <timer period="1.5"><executable cmd="echo late" name="late"/></timer>
        </launch>""")
    plan = plan_launch(f)
    c = cmds(plan)
    # substitution values are single arguments even with spaces; literal text splits like a shell
    assert c["py"] == ["python3", "-c", "print(1)", "hello world", "--x=two words"]
    assert c["echo"] == ["echo", "fallback", "6", str(PACKAGE_DIR)]
    assert c["echo-2"] == ["nice", "-n", "5", "echo", "a"]
    assert plan.processes[2].on_exit_shutdown and plan.processes[3].delay == 1.5
    assert "[late] (after 1.5 s) echo late" in plan.describe()


def test_errors_name_the_cause(tmp_path):
    def err(xml: str, match: str) -> None:
        with pytest.raises(LaunchError, match=match):
            plan_launch(write(tmp_path / "x.launch.xml", xml))

    err('<launch><node pkg="rviz2" exec="rviz2"/></launch>', "package 'rviz2' is not available here")
    err('<launch><node pkg="roboreal" exec="no-such-command"/></launch>', "roboreal has no command 'no-such-command'")
    err('<launch><executable cmd="ls" required="true"/></launch>', "unexpected attribute 'required'.*on_exit")
    err('<launch><nodee pkg="roboreal" exec="sim-bridge"/></launch>', "<nodee>: unsupported element")
    err('<launch><include file="x.launch.py"/></launch>', "only XML launch files")
    err('<launch><executable cmd="echo $(var nope)"/></launch>', "no launch argument or <let> named 'nope'")
    err('<launch><node pkg="roboreal" exec="sim-bridge"><param from="/no/such.yaml"/></node></launch>',
        "parameter file not found")
    err('<launch><node pkg="roboreal" exec="sim-bridge"><param from="$(dirname)"/></node></launch>',
        "parameter file not found")  # a folder is no params file
    err("<launch><executable cmd='ls'></launch>", "malformed XML")
    # underscores find the dashed command (ROS executables are often snake_case)
    plan = plan_launch(write(tmp_path / "ok.launch.xml", '<launch><node pkg="roboreal" exec="sim_bridge"/></launch>'))
    assert plan.processes[0].cmd == ROBOREAL + ["sim-bridge"]


def test_sim_robot_launch_file_plan():
    plan = plan_launch(PACKAGE_DIR / "launch" / "sim_robot.launch.xml", ["robot:=go1", "seed:=7"])
    [p] = plan.processes
    assert p.name == "sim_bridge"
    # no params file: the bridge takes its defaults from the robot (sim2real/nodes/params.py)
    assert p.cmd == ROBOREAL + [
        "sim-bridge", "--ros-args", "-r", "__node:=sim_bridge",
        "-p", "robot:=go1", "-p", "randomize:=false", "-p", "randomization:=mild", "-p", "seed:=7"]
    [p] = plan_launch(PACKAGE_DIR / "launch" / "sim_robot.launch.xml",
                      ["robot:=go1", "randomize:=true", "randomization:=heavy"]).processes
    assert p.cmd[-6:] == ["-p", "randomize:=true", "-p", "randomization:=heavy", "-p", "seed:=0"]
    params = PACKAGE_DIR / "sim2real" / "nodes" / "config" / "sim_bridge_panda.yaml"
    [p] = plan_launch(PACKAGE_DIR / "launch" / "sim_robot.launch.xml",
                      {"robot": "/any/robot.yaml", "params_file": str(params)}).processes
    assert p.cmd[5:11] == ["-r", "__node:=sim_bridge", "--params-file", str(params), "-p", "robot:=/any/robot.yaml"]


def test_cli_dry_run_and_errors(capsys):
    from roboreal.cli import main

    assert main(["launch", "sim_robot.launch.xml", "robot:=go1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[sim_bridge]" in out and "-p robot:=go1" in out
    assert main(["launch", "roboreal", "sim_robot.launch.xml", "robto:=go1"]) == 2
    assert "unknown launch argument 'robto'" in capsys.readouterr().err
    assert main(["launch", "sim_robot.launch.xml", "--show-args"]) == 0
    assert "'robot':" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------
# Running: signals, crashes
# ----------------------------------------------------------------------------------------
CHILD = """
import os, pathlib, signal, sys, time
out, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
def stop(signum, frame):
    out.write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "ignore-sigint" else stop)
signal.signal(signal.SIGTERM, stop)
print("child", out.name, "ready", flush=True)
pathlib.Path(str(out) + ".ready").write_text(str(os.getpid()))
while True:
    time.sleep(0.02)
"""


def _runner(launch_file: Path, *extra: str) -> Process:
    """The launch runner on `launch_file` in a subprocess; its output read back while it runs."""
    return Process([PY, "-m", "roboreal", "launch", str(launch_file), *extra],
                   {**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def child_script(tmp_path) -> Path:
    p = tmp_path / "child.py"
    p.write_text(CHILD)
    return p


def _launch_file(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "procs.launch.xml", f"<launch>\n{body}\n</launch>")


def test_sigint_stops_every_child_and_runner_exits_0(tmp_path, child_script):
    a, b = tmp_path / "a", tmp_path / "b"
    f = _launch_file(tmp_path, f"""
      <executable cmd="{PY} {child_script} {a} normal" name="alpha"/>
      <executable cmd="{PY} {child_script} {b} normal" name="beta"/>""")
    r = _runner(f)
    try:
        assert wait_until(lambda: Path(f"{a}.ready").exists() and Path(f"{b}.ready").exists(), 15.0), r.output
        r.proc.send_signal(signal.SIGINT)
        rc = r.proc.wait(15)
    finally:
        r.stop(signal.SIGKILL)
    assert rc == 0, r.output
    assert a.read_text() == "SIGINT" and b.read_text() == "SIGINT"  # each child got SIGINT and exited
    assert "[alpha] child a ready" in r.output and "[beta] child b ready" in r.output  # prefixed output
    assert "process 'alpha' has finished" in r.output and "process 'beta' has finished" in r.output


def test_crashed_child_is_reported_and_the_others_keep_running(tmp_path, child_script):
    a = tmp_path / "a"
    f = _launch_file(tmp_path, f"""
      <executable cmd="{PY} {child_script} {a} normal" name="survivor"/>
      <executable cmd="{PY} -c 'import sys; sys.exit(3)'" name="crasher"/>""")
    r = _runner(f)
    try:
        assert wait_until(lambda: "'crasher' has died" in r.output and Path(f"{a}.ready").exists(), 15.0), r.output
        time.sleep(0.3)
        assert r.proc.poll() is None and not a.exists()  # the survivor keeps running
        r.proc.send_signal(signal.SIGINT)
        rc = r.proc.wait(15)
    finally:
        r.stop(signal.SIGKILL)
    assert "process 'crasher' has died" in r.output and "exit code 3" in r.output
    assert a.read_text() == "SIGINT"
    assert rc == 1  # a process died before the shutdown


def test_on_exit_shutdown_and_sigterm_escalation(tmp_path, child_script):
    a = tmp_path / "a"
    f = _launch_file(tmp_path, f"""
      <executable cmd="{PY} {child_script} {a} ignore-sigint" name="stubborn"/>
      <timer period="1.0">
        <executable cmd="{PY} -c 'import sys; sys.exit(0)'" name="required" on_exit="shutdown"/>
      </timer>""")
    r = _runner(f, "--sigterm-timeout", "0.5")
    try:
        rc = r.proc.wait(20)
    finally:
        r.stop(signal.SIGKILL)
    # the required process exited -> shutdown; the child ignoring SIGINT got SIGTERM 0.5 s later
    assert rc == 0, r.output
    assert "'required' exited (exit code 0) and has on_exit=shutdown" in r.output
    assert "escalating to SIGTERM" in r.output
    assert a.read_text() == "SIGTERM"
