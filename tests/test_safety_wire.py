"""The safety chain's promises, checked on what arrives on the command topic over real DDS.

A hypothesis-driven hostile driver (`roboreal.sim2real.nodes.hostile.HostileRobot`) plays the
robot to `roboreal deploy` (a subprocess, loopback DDS, this process's ROS_DOMAIN_ID): it
sends arbitrary sequences of sensor messages (NaN/inf/huge/impossible values, wrong names,
lengths and order, stale/frozen/future/zero stamps, floods, silence), velocity commands or
goals, e-stops, resets, e-stop releases, interventions and teleop actions, and checks every
command the node publishes, with the node's ``~/audit`` record of it
(`roboreal.sim2real.safety.wire.WireChecker`): finite, inside the position limits minus the
margin, within max_target_rate * dt of the previous command, and within the torque bound
under the gains the robot applies (robot.yaml's on a position interface, the ones on the
wire with ``position_gains``), for the state the node used, which must be one the driver
sent. Each example starts from policy mode (reset, release, healthy stream), so the hostile
acts hit the policy, and every mode they lead to.

Bounded here (ROBOREAL_WIRE_FUZZ_SECONDS per case, default 25); `benchmarks/fuzz_wire.py`
runs the long campaign. The number of commands checked is printed in the terminal summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from roboreal.robots.spec import load_robot

assert os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"  # set by conftest: DDS stays on loopback

SECONDS = float(os.environ.get("ROBOREAL_WIRE_FUZZ_SECONDS", "25"))
# (robot, command interface, control trigger / executor): fixed and commanded gains, timer and
# event-driven stepping, rclpy's executor and the events executor
CASES = [("go1", "forward_command", "timer/single"), ("go1", "position_gains", "joint_states/events"),
         ("panda", "forward_command", "timer/single")]
_REPORTS: dict[str, dict] = {}


class _Report:
    def pytest_terminal_summary(self, terminalreporter):
        if not _REPORTS:
            return
        from roboreal.sim2real.safety.wire import describe

        total = sum(r["commands"] for r in _REPORTS.values())
        terminalreporter.write_sep("-", f"DDS fuzz: {total} commands checked on the wire (tests/test_safety_wire.py)")
        for key, r in _REPORTS.items():
            terminalreporter.write_line(f"{key}: {describe(r)}; acts {r['acts']}, examples {r['examples']}")


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    pm = request.config.pluginmanager
    if pm.get_plugin("wire-fuzz-report") is None:
        pm.register(_Report(), "wire-fuzz-report")
    yield


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    from roboreal.sim2real.nodes.hostile import tiny_bundle

    root = tmp_path_factory.mktemp("wire_runs")
    return {robot: tiny_bundle(robot, root) for robot in ("go1", "panda")}


@pytest.mark.ros
@pytest.mark.timeout(int(SECONDS) + 150)
@pytest.mark.parametrize("robot_name,interface,config", CASES, ids=[f"{r}-{i}-{c}" for r, i, c in CASES])
def test_every_command_on_the_wire_keeps_the_chains_promises(bundles, tmp_path, robot_name, interface, config):
    from hypothesis import HealthCheck, Phase, given, settings

    from roboreal.sim2real.nodes.hostile import HostileRobot, fuzz_actions, start_policy_node, stop_process

    spec = load_robot(robot_name)
    dt = float(__import__("yaml").safe_load((bundles[robot_name] / "manifest.yaml").read_text())["control"]["dt"])
    robot = HostileRobot(spec, interface=interface)
    node = start_policy_node(bundles[robot_name], robot_name, tmp_path / "node.log", interface, config)
    stats = {"acts": 0, "examples": 0}
    try:
        robot.attach(dt)
        assert robot.wait_mode("policy", 30), f"the node never reached policy mode: {robot.modes[-3:]}"
        end = time.monotonic() + SECONDS

        @settings(max_examples=max(10, int(3 * SECONDS)), deadline=None, phases=[Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck))
        @given(acts=fuzz_actions(spec))
        def session(acts):
            if time.monotonic() > end:
                return
            robot.recover()
            stats["acts"] += robot.play(acts, deadline=end)
            stats["examples"] += 1
            assert node.poll() is None, "the policy node died"
            assert not robot.problems, robot.problems[:5]
            assert not robot.invented, f"the audit names states never sent: {robot.invented[:5]}"

        session()
        robot.stream(0.5)  # let the last commands and audits arrive
        report = robot.report()
        report.update(stats)
        _REPORTS[f"{robot_name}/{interface}/{config}"] = report
        assert node.poll() is None, "the policy node died"
        assert report["violations"] == {k: 0 for k in report["violations"]}, report["examples"]
        assert report["invented"] == 0, robot.invented[:5]
        assert report["audited"] >= report["commands"] - 5, report  # every command came with its audit
        assert report["commands"] > 0.5 * SECONDS / dt, report  # the node kept publishing under attack
        assert report["modes"].get("policy", 0) > 0, report["modes"]  # the policy ran between the attacks
        faults = set(report["modes"]) & {"hold", "damping", "estop"}
        assert faults, report["modes"]  # ... and the attacks reached the safe modes
    finally:
        rc = stop_process(node)
        robot.close()
    assert rc == 0, (tmp_path / "node.log").read_text()[-3000:]
    log = (tmp_path / "node.log").read_text()
    assert "Traceback" not in log and "RuntimeWarning" not in log, log[-3000:]
