"""Two robots nobody on the project tuned for (examples/robots: a UR5e-class arm and an
A1-class quadruped, third-party style MJCFs + robot.yaml), each from MJCF to a policy running
over ROS 2 with the commands a user types and no Python of their own:
`roboreal robot check`, `roboreal train TASK env.robot=PATH`, `roboreal export`,
`roboreal sim2sim`, `roboreal launch sim_deploy.launch.xml robot:=PATH`.

The arm is trained for real (panda-reach's PPO preset, 300k steps, about a minute) and must
reach goals over DDS; the quadruped gets a short run (walking takes tens of minutes on a CPU,
see the README) and must come up through the safety chain's ramp into policy mode and stand.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from roboreal.cli import main
from roboreal.robots.spec import load_robot
from ros_helpers import Process, domain_id, ros_env, wait_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "robots"
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_.*' is deprecated:DeprecationWarning")


def roboreal(capsys, *args: str) -> str:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert code == 0, f"roboreal {' '.join(map(str, args))} exited {code}: {out.err[-2000:]}"
    return out.out


@pytest.fixture(scope="module")
def ur5e_bundle(tmp_path_factory) -> Path:
    """panda-reach's tuned PPO run on the UR5e (roboreal train panda-reach env.robot=PATH)."""
    run = tmp_path_factory.mktemp("ur5e") / "run"
    assert main(["train", "panda-reach", f"env.robot={EXAMPLES / 'ur5e'}", "--seed", "0", "--run-dir", str(run),
                 "--no-progress"]) == 0
    assert main(["export", str(run), "--checkpoint", "last"]) == 0
    return run / "bundle"


@pytest.fixture(scope="module")
def a1_bundle(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("a1") / "run"
    assert main(["train", "go1-walk", f"env.robot={EXAMPLES / 'a1'}", "--seed", "0", "--run-dir", str(run),
                 "--num-envs", "8", "--steps", "400", "--no-progress"]) == 0
    assert main(["export", str(run), "--checkpoint", "last"]) == 0
    return run / "bundle"


@pytest.mark.parametrize("robot,task", [("ur5e", "panda-reach"), ("a1", "go1-walk")])
def test_robot_check_says_the_task_runs(robot, task, capsys):
    report = json.loads(roboreal(capsys, "robot", "check", EXAMPLES / robot, "--json"))
    by_task = report["tasks"]
    assert by_task[task]["ok"], by_task[task]
    assert by_task[task]["control_hz"] == pytest.approx(25.0 if robot == "ur5e" else 50.0)
    assert report["added"], "the third-party MJCF lacked what the task needs: something must have been added"


def test_the_arm_learns_to_reach_and_passes_sim2sim(ur5e_bundle, capsys):
    from roboreal.policy_bundle import load_bundle

    manifest = load_bundle(ur5e_bundle).manifest
    assert manifest["robot"]["name"] == "ur5e" and manifest["robot"]["source"] == str(EXAMPLES / "ur5e" / "robot.yaml")
    assert manifest["control"]["physics_dt"] == pytest.approx(0.005)  # the task's, not the MJCF's 2 ms
    out = roboreal(capsys, "play", ur5e_bundle.parent, "--checkpoint", "last", "--episodes", "64", "--seed", "3")
    success = float(out.rsplit("success rate ", 1)[1].split("%")[0]) / 100
    assert success >= 0.9, out  # measured: 100% over 200 episodes (README, "Adding a robot")
    result = sim2sim(capsys, ur5e_bundle, 8)
    # through the deployment path (builder, runtime, safety chain) it still reaches its goals;
    # measured 8/8 nominal (and 3/8 under the heavy preset)
    assert result["nominal"]["success_rate"] >= 0.75, result["nominal"]


def sim2sim(capsys, bundle: Path, episodes: int) -> dict:
    """`roboreal sim2sim BUNDLE` (the robot found through the manifest's robot.source)."""
    roboreal(capsys, "sim2sim", bundle, "--episodes", episodes, "--no-progress", "--json", bundle / "sim2sim.json")
    result = json.loads((bundle / "sim2sim.json").read_text())
    # training's observation terms and the deployed builder agree on the same states
    assert max(result["observation_difference"].values()) < 1e-4, result["observation_difference"]
    return result


def test_the_quadruped_exports_and_runs_sim2sim(a1_bundle, capsys):
    from roboreal.policy_bundle import load_bundle

    bundle = load_bundle(a1_bundle, robot=load_robot(str(EXAMPLES / "a1")))
    assert bundle.manifest["joints"][0] == "FR_hip_joint" and len(bundle.manifest["joints"]) == 12
    result = sim2sim(capsys, a1_bundle, 4)
    assert result["task"] == "go1-walk" and result["nominal"]["mean_length"] > 0


@pytest.fixture
def ros_domain() -> int:
    """This file's DDS domain: the launch's and the probe's."""
    return domain_id(140)


@contextlib.contextmanager
def deployed(bundle: Path, robot: str, log: Path, domain: int):
    """`roboreal launch sim_deploy.launch.xml bundle:=B robot:=PATH` (a process group) running
    `bundle` on the simulated `robot` (a path), and a probe of its ground truth and the policy
    node's mode."""
    from roboreal.sim2real.sim2sim_dds import GroundTruthProbe

    probe = GroundTruthProbe(load_robot(str(EXAMPLES / robot)), domain)
    launch = Process([sys.executable, "-m", "roboreal", "launch", "sim_deploy.launch.xml", f"bundle:={bundle}",
                      f"robot:={EXAMPLES / robot}"], ros_env(domain), log=log, stop_timeout=20.0, process_group=True)
    try:
        yield launch, probe
    finally:
        launch.stop()
        probe.close()


def stream(send, seconds: float) -> None:
    """Call `send` at 10 Hz for `seconds` (the chain holds after 0.5 s without a command/goal)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        send()
        time.sleep(0.1)


@pytest.mark.ros
def test_the_arm_reaches_goals_over_ros_through_the_launch_file(ur5e_bundle, tmp_path, ros_domain):
    with deployed(ur5e_bundle, "ur5e", tmp_path / "launch.log", ros_domain) as (launch, probe):
        goals = [np.array(g) for g in ([0.45, 0.15, 0.35], [0.55, -0.15, 0.25], [0.40, 0.0, 0.45])]
        wait_for(lambda: probe.mode == "policy", 60, "the policy node's policy mode", launch,
                 each=lambda: probe.send(goal=goals[0]), poll=0.1)  # goals flow from the start: no goal, no policy
        errors = []
        for goal in goals:
            stream(lambda: probe.send(goal=goal), 4.0)  # two episodes' worth at 25 Hz
            errors.append(float(np.linalg.norm(probe.ee - goal)))
        assert probe.mode == "policy", launch.log.read_text()[-3000:]
        assert max(errors) < 0.05, errors  # within the task's success radius over DDS


@pytest.mark.ros
def test_the_quadruped_comes_up_through_the_chain_and_stands_over_ros(a1_bundle, tmp_path, ros_domain):
    from roboreal.sim2real.sim2sim_dds import fallen

    with deployed(a1_bundle, "a1", tmp_path / "launch.log", ros_domain) as (launch, probe):
        stand = lambda: probe.send(command=np.zeros(3))  # noqa: E731
        wait_for(lambda: probe.mode == "policy", 60, "the policy node's policy mode", launch, each=stand, poll=0.1)
        wait_for(lambda: probe.base_pose is not None, 10, "the sim bridge's base pose", launch, each=stand, poll=0.1)
        stream(stand, 2.0)
        assert probe.mode == "policy", launch.log.read_text()[-3000:]
        assert not fallen(probe.base_pose, load_robot(str(EXAMPLES / "a1")).safety.tilt_limit), probe.base_pose
