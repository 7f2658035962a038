"""The policy node's observation builder equals the training env's observation, term by term.

The builder gets only what a real robot publishes (JointState with names in any order,
Imu with a ROS x-y-z-w quaternion, Twist, PoseStamped); the env computes from the
simulator state. Both compute every term with `roboreal.control.observation` and must give
the same vector for the same physical state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import roboreal
from roboreal.envs.math_utils import projected_gravity as env_projected_gravity
from roboreal.sim2real.bundle import build_manifest
from roboreal.control.observation import Term, finish, projected_gravity, raw_value, wrap_angle
from roboreal.envs.mujoco_env import ObsTerm
from roboreal.sim2real.nodes.observation import (
    ObservationBuilder,
    ObservationError,
    quat_wxyz_from_ros,
)


def projected_gravity_xyzw(q_xyzw) -> np.ndarray:
    """The builder's path: a ROS quaternion -> the reading -> the shared source function."""
    return projected_gravity(quat_wxyz_from_ros(q_xyzw)[None])[0]


def make_env(task: str):
    # NB: observation_noise={} does NOT disable noise (config dicts merge into the defaults):
    # every noisy term is set to 0 explicitly, and the test checks that it took.
    from roboreal.envs.registry import task_config

    noisy = task_config(task, {}).observation_noise
    env = roboreal.make(task, num_envs=1, observation_noise={k: 0.0 for k in noisy},
                        randomization={"enabled": False})
    assert not any(env.cfg.observation_noise.values()) and not env.cfg.randomization.enabled
    return env


def manifest_of(env) -> dict:
    """The manifest `roboreal export` would write for a policy trained on `env`."""
    group = "policy"
    info = {"obs_group": group, "action_size": env.action_size, "action_type": env.spec.action_type,
            "obs_size": env.spec.observation_sizes[group], "task": env.task_name, "algo": "test",
            "checkpoint": "", "step": 0}
    return build_manifest(env, info, "/nonexistent")


def set_state(env, qpos: np.ndarray, qvel: np.ndarray) -> None:
    env.sim.set_state([0], qpos[None], qvel[None])
    env.sim.forward([0])
    env._refresh()


def env_obs(env) -> np.ndarray:
    return env._compute_observations()["policy"][0].double().numpy()


def joint_state_msg(env, qpos, qvel, rng, extra_joints: dict | None = None):
    """(names, position, velocity) of every spec (and gripper) joint, in a shuffled order."""
    import mujoco

    names = list(env.robot.joint_names) + (list(env.robot.gripper.joints) if env.robot.gripper else [])
    pos, vel = [], []
    for n in names:
        jid = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_JOINT, n)
        pos.append(qpos[env.model.jnt_qposadr[jid]])
        vel.append(qvel[env.model.jnt_dofadr[jid]])
    for n, (p, v) in (extra_joints or {}).items():
        names.append(n), pos.append(p), vel.append(v)
    order = rng.permutation(len(names))
    assert not np.array_equal(order, np.arange(len(names)))
    return [names[i] for i in order], np.array(pos)[order], np.array(vel)[order]


def random_quat(rng, max_tilt: float = 0.6) -> np.ndarray:
    """w, x, y, z: random yaw, tilted by up to max_tilt."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    ang = rng.uniform(-max_tilt, max_tilt)
    q = np.concatenate([[math.cos(ang / 2)], math.sin(ang / 2) * axis])
    return q / np.linalg.norm(q)


def test_go1_builder_equals_env_observation():
    env = make_env("go1-walk")
    manifest = manifest_of(env)
    rng = np.random.default_rng(0)
    spec = env.robot
    try:
        for trial in range(6):
            b = ObservationBuilder(manifest, spec)
            qpos = env.home_qpos.double().numpy().copy()
            qpos[2] = 0.3
            qpos[3:7] = random_quat(rng)
            qpos[7:19] = rng.uniform(spec.lower, spec.upper)
            qvel = rng.normal(0.0, 2.0, env.model.nv)
            set_state(env, qpos, qvel)
            env.commands[0] = torch.tensor(rng.uniform(-1, 1, 3), dtype=torch.float32)
            env.actions[0] = torch.tensor(rng.uniform(-1, 1, 12), dtype=torch.float32)
            expected = env_obs(env)

            names, pos, vel = joint_state_msg(env, qpos, qvel, rng, {"some_other_joint": (9.0, 9.0)})
            b.set_joint_state(names, pos, vel, arrival=1.0)
            w, x, y, z = qpos[3:7]
            b.set_imu((x, y, z, w), qvel[3:6], arrival=1.0)  # ROS order x, y, z, w; gyro in the base frame
            b.set_cmd_vel(*env.commands[0].double().numpy(), arrival=1.0)
            b.set_last_action(env.actions[0].double().numpy())
            assert b.ready
            got = b.build()
            assert got.shape == expected.shape == (45,)
            np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5, err_msg=f"trial {trial}")
            # the state handed to the safety chain: spec order, quaternion w, x, y, z
            st = b.robot_state()
            np.testing.assert_allclose(st.position, qpos[7:19])
            np.testing.assert_allclose(st.velocity, qvel[6:18])
            np.testing.assert_allclose(st.orientation, qpos[3:7])
    finally:
        env.close()


def test_go1_term_by_term_and_units():
    """Each raw term by name: a mismatch names the term, not just an index."""
    env = make_env("go1-walk")
    manifest = manifest_of(env)
    rng = np.random.default_rng(1)
    try:
        b = ObservationBuilder(manifest, env.robot)
        qpos = env.home_qpos.double().numpy().copy()
        qpos[3:7] = random_quat(rng)
        qvel = rng.normal(0.0, 1.0, env.model.nv)
        set_state(env, qpos, qvel)
        names, pos, vel = joint_state_msg(env, qpos, qvel, rng)
        b.set_joint_state(names, pos, vel, arrival=0.0)
        w, x, y, z = qpos[3:7]
        b.set_imu((x, y, z, w), qvel[3:6], arrival=0.0)
        values = b.term_values()
        for name, v in env.observation_terms("policy").items():
            if name in ("velocity_command", "last_action"):
                continue
            np.testing.assert_allclose(values[name], v[0].double().numpy(), atol=2e-5, err_msg=name)
        raw = b.raw_terms()
        np.testing.assert_allclose(raw["joint_pos"], qpos[7:19])  # raw: before the default-pose offset
        np.testing.assert_allclose(raw["base_ang_vel"], qvel[3:6])  # raw: before the 0.25 scale
        # an upright robot sees gravity straight down
        b.set_imu((0, 0, 0, 1), (0, 0, 0), arrival=0.0)
        np.testing.assert_allclose(b.raw_terms()["projected_gravity"], [0, 0, -1], atol=1e-12)
    finally:
        env.close()


def test_projected_gravity_matches_env_math():
    rng = np.random.default_rng(2)
    quats = np.stack([random_quat(rng, max_tilt=3.0) for _ in range(50)])
    expected = env_projected_gravity(torch.tensor(quats)).numpy()
    for q, e in zip(quats, expected):
        w, x, y, z = q
        np.testing.assert_allclose(projected_gravity_xyzw((x, y, z, w)), e, atol=1e-12)
        # an unnormalized quaternion (some drivers) means the same rotation
        np.testing.assert_allclose(projected_gravity_xyzw((2 * x, 2 * y, 2 * z, 2 * w)), e, atol=1e-12)
    assert np.isnan(projected_gravity_xyzw((0, 0, 0, 0))).all()


def test_panda_reach_builder_equals_env_observation():
    env = make_env("panda-reach")
    manifest = manifest_of(env)
    rng = np.random.default_rng(3)
    spec = env.robot
    try:
        for trial in range(5):
            b = ObservationBuilder(manifest, spec)
            qpos = env.model.qpos0.copy()
            qpos[env.joint_qpos_idx.numpy()] = rng.uniform(spec.lower, spec.upper)
            qpos[env.finger_qpos_idx.numpy()] = rng.uniform(0, 0.04, 2)
            qvel = np.zeros(env.model.nv)
            qvel[env.joint_qvel_idx.numpy()] = rng.normal(0, 1.0, 7)
            set_state(env, qpos, qvel)
            goal = rng.uniform(env.goal_low.numpy(), env.goal_high.numpy())
            env.goal[0] = torch.tensor(goal, dtype=torch.float32)
            expected = env_obs(env)

            names, pos, vel = joint_state_msg(env, qpos, qvel, rng)
            b.set_joint_state(names, pos, vel, arrival=1.0)
            b.set_goal(goal, arrival=1.0)  # PoseStamped.pose.position, robot base frame
            assert b.ready
            got = b.build()
            assert got.shape == expected.shape == (20,)
            np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5, err_msg=f"trial {trial}")
            # forward kinematics on the robot's model = the sim's end-effector sensor
            np.testing.assert_allclose(b.raw_terms()["ee_pos"], env.ee_pos[0].double().numpy(), atol=2e-6)
    finally:
        env.close()


def test_panda_pick_builder_equals_env_observation():
    env = make_env("panda-pick")
    manifest = manifest_of(env)
    rng = np.random.default_rng(4)
    spec = env.robot
    try:
        b = ObservationBuilder(manifest, spec)
        qpos = env.model.qpos0.copy()
        qpos[env.joint_qpos_idx.numpy()] = rng.uniform(spec.lower, spec.upper)
        qpos[env.finger_qpos_idx.numpy()] = [0.013, 0.017]
        obj = np.array([0.5, 0.05, 0.1])
        qpos[env.object_qpos:env.object_qpos + 3] = obj
        qvel = np.zeros(env.model.nv)
        qvel[env.joint_qvel_idx.numpy()] = rng.normal(0, 1.0, 7)
        v_obj = np.array([0.2, -0.1, 0.3])
        qvel[env.object_qvel:env.object_qvel + 3] = v_obj
        set_state(env, qpos, qvel)
        goal = np.array([0.45, -0.1, 0.3])
        env.goal[0] = torch.tensor(goal, dtype=torch.float32)
        expected = env_obs(env)

        names, pos, vel = joint_state_msg(env, qpos, qvel, rng)
        b.set_joint_state(names, pos, vel, arrival=1.0)
        b.set_goal(goal, arrival=1.0)
        # two tracker poses 40 ms apart: the velocity is their finite difference
        b.set_object_pose(obj - v_obj * 0.04, arrival=0.96, header_stamp=100.00)
        b.set_object_pose(obj, arrival=1.0, header_stamp=100.04)
        got = b.build()
        assert got.shape == expected.shape == (30,)
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)
        assert b.raw_terms()["gripper_width"][0] == pytest.approx(0.030)
    finally:
        env.close()


def test_cartpole_pole_angle_wrapped_as_in_sim():
    env = make_env("cartpole-balance")
    manifest = manifest_of(env)
    try:
        for angle in (0.1, 2 * math.pi + 0.1, -3 * math.pi + 0.2, math.pi - 1e-3, 5 * math.pi + 1e-3):
            b = ObservationBuilder(manifest, env.robot)
            qpos, qvel = np.array([0.3, angle]), np.array([-0.5, 1.5])
            set_state(env, qpos, qvel)
            expected = env_obs(env)
            b.set_joint_state(["hinge", "slider"], [angle, 0.3], [1.5, -0.5], arrival=0.0)
            np.testing.assert_allclose(b.build(), expected, atol=2e-6, err_msg=f"angle {angle}")
    finally:
        env.close()


def test_partial_and_malformed_joint_states():
    env = make_env("go1-walk")
    manifest = manifest_of(env)
    env.close()
    spec = env.robot
    b = ObservationBuilder(manifest, spec)
    names = spec.joint_names
    assert "a JointState" in b.missing()[0] and "an IMU message" in b.missing()
    # split over two messages (e.g. two drivers): merged by name
    b.set_joint_state(names[:6], np.zeros(6), np.zeros(6), arrival=1.0)
    assert any("joint positions of" in m and names[6] in m for m in b.missing())
    b.set_joint_state(names[6:], np.ones(6), np.ones(6), arrival=2.0)
    b.set_imu((0, 0, 0, 1), (0, 0, 0), arrival=2.0)
    assert b.ready
    assert b.joint_state_time() == 1.0  # the oldest joint reading is what the watchdog sees
    assert b.watched_reading_time() == 1.0  # what a stalled node catches up on: joints and IMU
    b.set_joint_state(names[:6], np.zeros(6), np.zeros(6), arrival=2.5)
    assert b.watched_reading_time() == 2.0  # now the IMU is the oldest
    with pytest.raises(ValueError, match="12 names but 11 position"):
        b.set_joint_state(names, np.zeros(11), np.zeros(12), arrival=3.0)
    with pytest.raises(ValueError, match="more than once"):
        b.set_joint_state([names[0], names[0]], [0, 0], [0, 0], arrival=3.0)
    # empty velocity array (allowed by ROS): positions update, velocities keep their last value
    b.set_joint_state(names, np.full(12, 0.5), [], arrival=4.0)
    np.testing.assert_allclose(b.robot_state().velocity, [0] * 6 + [1] * 6)
    # NaN is passed through (the chain latches its fault mode on it)
    b.set_joint_state(names[:1], [float("nan")], [0.0], arrival=5.0)
    assert np.isnan(b.build()).any() and np.isnan(b.robot_state().position[0])
    # last action: clipped like the env's actions
    b.set_last_action(np.array([5.0, -5.0, float("nan")] + [0.5] * 9))
    np.testing.assert_allclose(b.raw_terms()["last_action"][:4], [1.0, -1.0, 0.0, 0.5])


def test_unknown_source_is_refused_by_name():
    env = make_env("cartpole-balance")
    manifest = manifest_of(env)
    env.close()
    manifest["observation"]["terms"][2]["source"] = "lidar.scan"
    with pytest.raises(ObservationError, match="pole_angle.*lidar.scan"):
        ObservationBuilder(manifest, env.robot)
    manifest["observation"]["terms"][2]["source"] = "joint_states.position[hinge]"
    manifest["observation"]["terms"][2]["offset"] = "median"
    with pytest.raises(ObservationError, match="pole_angle.*unknown offset"):
        ObservationBuilder(manifest, env.robot)


# ----------------------------------------------------------------------------------------------
# One definition, two edges: env states replayed through the builder, term by term
# ----------------------------------------------------------------------------------------------
REPLAY_TASKS = {
    # task: overrides besides the noise (cartpole: starts beyond +-pi, so the wrap is exercised)
    "go1-walk": {},  # domain randomization stays on (friction, mass, motor strength, pushes)
    "panda-reach": {},
    "panda-pick": {},
    "cartpole-balance": {"initial_state_range": 4.0},
}


def publish_sim_state(env, i: int, b: ObservationBuilder, rng) -> None:
    """Hand the builder world `i`'s state as the sim bridge's drivers publish it after a physics
    step: JointState of every joint (shuffled) from qpos/qvel; the IMU's and the object tracker's
    readings from that step's sensor pass (MuJoCo computes sensors and body poses before it
    integrates, so they are one physics step older than the joints, on the bridge as in the env);
    a tracker's velocity estimate; the command / goal and the action the node sent."""
    import mujoco

    m = env.sim.model_of(i)
    qpos, qvel = env.sim.state[i, env.sim.qpos_slice], env.sim.state[i, env.sim.qvel_slice]
    sensors = env.sim.get_sensordata()[i]
    names = list(env.robot.joint_names) + [g for g in (env.robot.gripper.joints if env.robot.gripper else [])
                                           if g not in env.robot.joint_names]
    ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in names]
    pos = np.array([qpos[m.jnt_qposadr[j]] for j in ids])
    vel = np.array([qvel[m.jnt_dofadr[j]] for j in ids])
    order = rng.permutation(len(names))
    b.set_joint_state([names[k] for k in order], pos[order], vel[order], arrival=1.0)
    if "imu_quat" in env._sensor_slices:
        w, x, y, z = sensors[env._sensor_slices["imu_quat"]]
        b.set_imu((x, y, z, w), sensors[env._sensor_slices["imu_gyro"]], arrival=1.0)
    if hasattr(env, "commands"):
        b.set_cmd_vel(*env.commands[i].double().numpy(), arrival=1.0)
    if hasattr(env, "goal"):
        b.set_goal(env.goal[i].double().numpy(), arrival=1.0)
    if hasattr(env, "object_joint"):
        b.set_object_pose(sensors[env._sensor_slices["object_pos"]], arrival=1.0)
        b.set_object_velocity(qvel[env.object_qvel:env.object_qvel + 3])
    b.set_last_action(env.actions[i].double().numpy())


@pytest.mark.parametrize("task", list(REPLAY_TASKS))
def test_replayed_env_states_build_the_same_terms(task):
    """Several steps of random actions; after each, every world's state goes through the builder
    as a robot would publish it: each term equals the env's to 1e-5 (max differences printed)."""
    from roboreal.envs.registry import task_config

    noisy = task_config(task, {}).observation_noise
    env = roboreal.make(task, num_envs=4, seed=5, observation_noise={k: 0.0 for k in noisy},
                        **REPLAY_TASKS[task])
    assert not any(env.cfg.observation_noise.values())
    assert env.cfg.randomization.enabled == (task == "go1-walk")
    manifest = manifest_of(env)
    rng = np.random.default_rng(6)
    gen = torch.Generator().manual_seed(7)
    worst: dict[str, float] = {}
    wrapped = False
    try:
        env.reset()
        for step in range(12):
            env.step(torch.rand(env.num_envs, env.action_size, generator=gen) * 2 - 1)
            expected = env.observation_terms()
            policy = env._compute_observations()["policy"]
            for i in range(env.num_envs):
                b = ObservationBuilder(manifest, env.robot)
                publish_sim_state(env, i, b, rng)
                assert b.ready, b.missing()
                got = b.term_values()
                assert list(got) == list(expected) == [t["name"] for t in manifest["observation"]["terms"]]
                for name, v in got.items():
                    d = float(np.abs(v - expected[name][i].double().numpy()).max())
                    worst[name] = max(worst.get(name, 0.0), d)
                np.testing.assert_allclose(b.build(), policy[i].double().numpy(), atol=1e-5, rtol=0)
                if task.startswith("cartpole"):
                    wrapped |= abs(float(env.qpos[i, 1])) > math.pi
        print(f"\n{task}: per-term max |builder - env| " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
        assert all(v <= 1e-5 for v in worst.values()), worst
        assert not task.startswith("cartpole") or wrapped, "no pole angle beyond +-pi was replayed"
    finally:
        env.close()


def test_manifest_properties_not_names_decide_relative_and_wrap():
    """relative_to / wrap come from the manifest: a term named anything is built as object minus
    end-effector when it says relative_to: end_effector, and wrapped when it says wrap: true."""
    env = make_env("panda-pick")
    manifest = manifest_of(env)
    try:
        terms = manifest["observation"]["terms"]
        rel = next(t for t in terms if t["name"] == "object_rel_pos")
        assert rel["relative_to"] == "end_effector" and rel["wrap"] is False
        rel["name"] = "cube_from_gripper"
        raw_pos = next(t for t in terms if t["name"] == "object_pos")
        assert raw_pos["relative_to"] is None
        b = ObservationBuilder(manifest, env.robot)
        rng = np.random.default_rng(8)
        qpos = env.model.qpos0.copy()
        qpos[env.joint_qpos_idx.numpy()] = rng.uniform(env.robot.lower, env.robot.upper)
        set_state(env, qpos, np.zeros(env.model.nv))
        names, pos, vel = joint_state_msg(env, qpos, np.zeros(env.model.nv), rng)
        b.set_joint_state(names, pos, vel, arrival=0.0)
        obj = np.array([0.4, 0.1, 0.2])
        b.set_object_pose(obj, arrival=0.0)
        raw = b.raw_terms()
        np.testing.assert_allclose(raw["cube_from_gripper"], obj - raw["ee_pos"], atol=1e-12)
        np.testing.assert_allclose(raw["ee_pos"], env.ee_pos[0].double().numpy(), atol=2e-6)
        np.testing.assert_allclose(raw["object_pos"], obj)
        # ... and without relative_to, the same source is the object's position itself
        rel["relative_to"] = None
        b2 = ObservationBuilder(manifest, env.robot)
        b2.set_joint_state(names, pos, vel, arrival=0.0)
        b2.set_object_pose(obj, arrival=0.0)
        np.testing.assert_allclose(b2.raw_terms()["cube_from_gripper"], obj)
        rel["relative_to"] = "base_link"
        with pytest.raises(ObservationError, match="cube_from_gripper.*relative_to"):
            ObservationBuilder(manifest, env.robot)
    finally:
        env.close()

    env = make_env("cartpole-balance")
    manifest = manifest_of(env)
    env.close()
    terms = manifest["observation"]["terms"]
    assert [t["wrap"] for t in terms] == [False, False, True, False]
    terms[2]["name"] = "theta"
    terms[0]["wrap"] = True  # the slider: wrapped because the manifest says so, not because of the joint
    b = ObservationBuilder(manifest, env.robot)
    b.set_joint_state(["slider", "hinge"], [4.0, 3 * math.pi + 0.25], [0.0, 0.0], arrival=0.0)
    raw = b.raw_terms()
    assert raw["theta"][0] == pytest.approx(-math.pi + 0.25)
    assert raw["cart_position"][0] == pytest.approx(4.0 - 2 * math.pi)
    terms[2]["wrap"] = False
    b = ObservationBuilder(manifest, env.robot)
    b.set_joint_state(["slider", "hinge"], [4.0, 3 * math.pi + 0.25], [0.0, 0.0], arrival=0.0)
    assert b.raw_terms()["theta"][0] == pytest.approx(3 * math.pi + 0.25)


def test_manifest_without_the_new_keys():
    """Defaults (wrap false, relative_to none, history 1) for manifests that lack the keys; where a builder
    before them read a term differently (name *_rel_pos, an unlimited hinge), it is refused
    with the fix, not silently read another way than the policy was trained."""
    for task, refused in (("go1-walk", None), ("panda-reach", None), ("panda-pick", "object_rel_pos.*relative_to"),
                          ("cartpole-balance", "pole_angle.*wrap: true")):
        env = make_env(task)
        manifest = manifest_of(env)
        env.close()
        for t in manifest["observation"]["terms"]:
            del t["wrap"], t["relative_to"], t["history"]
        if refused is None:
            b = ObservationBuilder(manifest, env.robot)
            assert not any(t.wrap or t.relative_to or t.history != 1 for t in b.terms)
        else:
            with pytest.raises(ObservationError, match=refused + ".*re-export"):
                ObservationBuilder(manifest, env.robot)


def test_shared_functions_agree_on_numpy_and_torch():
    """The env runs the term functions on float32 tensors, the builder on float64 arrays."""
    rng = np.random.default_rng(9)
    q = rng.normal(size=(64, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    np.testing.assert_allclose(projected_gravity(torch.tensor(q)).numpy(), projected_gravity(q), atol=1e-12)
    np.testing.assert_allclose(projected_gravity(q), env_projected_gravity(torch.tensor(q)).numpy(), atol=1e-12)
    a = rng.uniform(-20, 20, (64, 1))
    np.testing.assert_allclose(wrap_angle(torch.tensor(a)).numpy(), wrap_angle(a), atol=1e-12)
    assert np.all((wrap_angle(a) > -math.pi) & (wrap_angle(a) <= math.pi))
    term = Term("x", "object_pose.position", scale=2.0, clip=0.5, relative_to="end_effector")
    readings = {"object_pos": np.array([[1.0, 0.2, 0.1]]), "ee_pos": np.array([[0.5, 0.3, 0.0]])}
    np.testing.assert_allclose(finish(raw_value(term, readings), term), [[0.5, -0.2, 0.2]])
    t_readings = {k: torch.tensor(v) for k, v in readings.items()}
    np.testing.assert_allclose(finish(raw_value(term, t_readings), term).numpy(), [[0.5, -0.2, 0.2]])
    offset = Term("j", "joint_states.position", offset="default_pose", scale=10.0)
    np.testing.assert_allclose(finish(np.array([[1.0, 2.0]]), offset, np.array([0.5, 0.5]),
                                      noise=np.array([[0.1, 0.0]])), [[6.0, 15.0]])


def test_env_terms_are_declared_by_source():
    with pytest.raises(ObservationError, match="lidar.*lidar.scan"):
        ObsTerm("lidar", "lidar.scan")
    with pytest.raises(ObservationError, match="height.*fn"):
        ObsTerm("height", "privileged")
    with pytest.raises(ObservationError, match="joint_pos.*fn"):
        ObsTerm("joint_pos", "joint_states.position", fn=lambda: None)
    with pytest.raises(ObservationError, match="angle.*unknown relative_to"):
        ObsTerm("angle", "joint_states.position[hinge]", relative_to="hand")


def test_history_terms_stack_alike_in_the_env_and_on_the_robot():
    """A term with a history is its last H values, newest first, on both sides: the env stacks
    them per control step and refills them on a new episode; the builder per `build` and
    after `restart_history`. Six random states through both, then a restart."""
    from roboreal.envs.registry import task_config

    noisy = task_config("go1-walk", {}).observation_noise
    history = {"base_ang_vel": 3, "joint_vel": 2, "last_action": 4}
    env = roboreal.make("go1-walk", num_envs=1, observation_noise={k: 0.0 for k in noisy},
                        randomization={"enabled": False}, observation_history=history)
    manifest = manifest_of(env)
    sizes = {t["name"]: (t["size"], t["history"]) for t in manifest["observation"]["terms"]}
    assert sizes["base_ang_vel"] == (9, 3) and sizes["joint_vel"] == (24, 2) and sizes["last_action"] == (48, 4)
    assert sizes["projected_gravity"] == (3, 1) and manifest["observation"]["size"] == 45 + 6 + 12 + 36
    rng = np.random.default_rng(1)
    spec = env.robot
    b = ObservationBuilder(manifest, spec)
    every = torch.ones(1, dtype=torch.bool)
    frames = []
    try:
        for step in range(7):
            qpos = env.home_qpos.double().numpy().copy()
            qpos[2], qpos[3:7] = 0.3, random_quat(rng)
            qpos[7:19] = rng.uniform(spec.lower, spec.upper)
            qvel = rng.normal(0.0, 2.0, env.model.nv)
            set_state(env, qpos, qvel)
            env.actions[0] = torch.tensor(rng.uniform(-1, 1, 12), dtype=torch.float32)
            restart = step in (0, 5)  # a new episode on the env; a start / reset on the robot
            expected = env._compute_observations(new_episode=every if restart else None)["policy"][0].double().numpy()
            names, pos, vel = joint_state_msg(env, qpos, qvel, rng)
            b.set_joint_state(names, pos, vel, arrival=1.0 + step)
            w, x, y, z = qpos[3:7]
            b.set_imu((x, y, z, w), qvel[3:6], arrival=1.0 + step)
            b.set_cmd_vel(*env.commands[0].double().numpy(), arrival=1.0 + step)
            b.set_last_action(env.actions[0].double().numpy())
            if restart:
                b.restart_history()
            got = b.build()
            np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5, err_msg=f"step {step}")
            frames.append(qvel[3:6] * 0.25)  # base_ang_vel's finished value (scale 0.25)
            gyro = got[:9].reshape(3, 3)  # newest first, refilled on a restart
            since = step - (5 if step >= 5 else 0)
            want = [frames[max(step - i, step - since)] for i in range(3)]
            np.testing.assert_allclose(gyro, np.array(want), atol=2e-5, err_msg=f"step {step}")
            # term_values: each term's newest value, what the env's observation_terms gives
            assert b.term_values()["base_ang_vel"].shape == (3,)
            np.testing.assert_allclose(b.term_values()["base_ang_vel"], gyro[0], atol=2e-5)
    finally:
        env.close()


def test_history_is_refused_where_it_cannot_hold():
    from roboreal.config import ConfigError
    from roboreal.policy_bundle import BundleError, check_layout

    with pytest.raises(ConfigError, match=r"observation_history.base_lin_vel: go1-walk has no policy observation "
                                          r"term 'base_lin_vel'"):
        roboreal.make("go1-walk", num_envs=1, observation_history={"base_lin_vel": 3})
    with pytest.raises(ConfigError, match=r"observation_history.joint_vel: history must be a whole number >= 1, "
                                          r"not 0"):
        roboreal.make("go1-walk", num_envs=1, observation_history={"joint_vel": 0})
    env = make_env("go1-walk")
    manifest = manifest_of(env)
    env.close()
    expected = [dict(t) for t in manifest["observation"]["terms"]]
    # a bundle trained with a history, checked against a layout without one (or the other way)
    manifest["observation"]["terms"][4] |= {"history": 3, "size": 36}
    manifest["observation"]["size"] += 24
    with pytest.raises(BundleError, match=r"observation term 4 differs: bundle has joint_vel \(36\), expected "
                                          r"joint_vel \(12\)"):
        check_layout(manifest, expected)
    expected[4] |= {"size": 36}
    with pytest.raises(BundleError, match=r"observation term 4 \(joint_vel\) history differs: bundle 3, expected 1"):
        check_layout(manifest, expected)
    manifest["observation"]["terms"][4]["size"] = 35  # not a whole number of steps
    manifest["observation"]["size"] -= 1
    with pytest.raises(ObservationError, match=r"joint_vel.*size 35 is not a whole number of its 3 history steps"):
        ObservationBuilder(manifest, env.robot)
