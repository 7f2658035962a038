"""The batched env contract: shapes, auto-reset semantics, randomization, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import roboreal
from roboreal.config import ConfigError
from roboreal.envs import task_names

ALL_TASKS = task_names()


def zero_actions(env) -> torch.Tensor:
    if env.spec.action_type == "discrete":
        return torch.zeros(env.num_envs, dtype=torch.long)
    return torch.zeros(env.num_envs, env.spec.action_size)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_observation_groups_shapes_and_dtypes(task):
    env = roboreal.make(task, num_envs=3, seed=0)
    obs, _ = env.reset()
    expected = {"policy"} | ({"observation", "achieved_goal", "desired_goal"} if env.spec.goal_conditioned else set())
    assert expected <= set(obs)
    for group, size in env.spec.observation_sizes.items():
        assert obs[group].shape == (3, size), group
        assert obs[group].dtype == torch.float32
        assert torch.isfinite(obs[group]).all()
    obs, reward, terminated, truncated, info = env.step(zero_actions(env))
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert set(info["final_observation"]) == set(obs)
    assert set(info["reward_terms"]) == set(env.reward_names)
    if env.spec.goal_conditioned:
        # the reward is recomputable from goals alone (what HER relies on)
        torch.testing.assert_close(env.compute_reward(obs["achieved_goal"], obs["desired_goal"], None), reward)
        assert torch.equal(obs["policy"], torch.cat([obs["observation"], obs["desired_goal"]], -1))
    env.close()


def test_uncontrolled_pole_falls_and_autoresets_in_the_same_step():
    env = roboreal.make("cartpole-balance", num_envs=4, seed=1)
    env.reset()
    for step in range(1, 300):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 1))
        if terminated.any():
            break
    else:
        pytest.fail("an uncontrolled pole never fell")
    done = terminated.nonzero().squeeze(-1)
    final = info["final_observation"]["policy"]
    # the finished episode's last observation: pole beyond 12 degrees
    assert (final[done, 2].abs() > env.cfg.pole_angle_limit).all()
    # the returned observation already starts the next episode (near upright)
    assert (obs["policy"][done, 2].abs() <= env.cfg.initial_state_range + 1e-6).all()
    assert not truncated[done].any()
    assert torch.equal(info["episode"]["length"], torch.full((len(done),), step))
    assert torch.allclose(info["episode"]["return"], torch.full((len(done),), float(step)))
    # envs that did not finish: final observation == observation
    alive = (~terminated).nonzero().squeeze(-1)
    assert torch.equal(final[alive], obs["policy"][alive])


def test_time_out_is_truncation_not_termination():
    # a pole that cannot "fall" (limit 180 deg) on a long rail: only the time limit ends it
    env = roboreal.make("cartpole-balance", num_envs=2, seed=0, episode_length_s=0.2,
                        pole_angle_limit=4.0, cart_position_limit=100.0)
    env.reset()
    for step in range(1, 11):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 1))
        assert not terminated.any()
        assert truncated.all() == (step == 10)
    assert not torch.equal(info["final_observation"]["policy"], obs["policy"])
    assert torch.equal(env.episode_step, torch.zeros(2, dtype=torch.long))


def test_same_seed_same_rollout_and_different_seed_differs():
    def rollout(seed):
        env = roboreal.make("cartpole-balance", num_envs=5, seed=seed)
        obs, _ = env.reset()
        gen = torch.Generator().manual_seed(0)
        trace = [obs["policy"]]
        for _ in range(80):
            obs, *_ = env.step(torch.rand(5, 1, generator=gen) * 2 - 1)
            trace.append(obs["policy"])
        return torch.stack(trace)

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


DR = {"enabled": True,
      "mass_scale": {"range": [0.5, 2.0], "targets": ["pole"]},
      "joint_damping_scale": {"range": [0.0, 1.0]},
      "action_latency": {"range": [0, 2]}}


def test_randomization_changes_each_env_model_and_is_reproducible():
    env = roboreal.make("cartpole-balance", num_envs=6, seed=7, randomization=DR)
    pole = env.model.body("pole").id
    masses = np.array([env.sim.models[i].body_mass[pole] for i in range(6)])
    sampled = env.randomizer.values["mass_scale"][:, 0].numpy()
    np.testing.assert_allclose(masses, env.model.body_mass[pole] * sampled, rtol=1e-6)
    assert len(np.unique(masses.round(6))) == 6  # every env got its own
    assert set(env.randomizer.describe(4)) == {"mass_scale", "joint_damping_scale", "action_latency"}
    assert env.randomizer.describe(4)["mass_scale"] == [pytest.approx(float(sampled[4]))]
    latency = env.randomizer.values["action_latency"][:, 0]
    assert set(latency.tolist()) <= {0.0, 1.0, 2.0}

    again = roboreal.make("cartpole-balance", num_envs=6, seed=7, randomization=DR)
    other = roboreal.make("cartpole-balance", num_envs=6, seed=8, randomization=DR)
    for k in env.randomizer.values:
        assert torch.equal(env.randomizer.values[k], again.randomizer.values[k])
    assert not torch.equal(env.randomizer.values["mass_scale"], other.randomizer.values["mass_scale"])


def test_randomized_mass_changes_the_dynamics():
    heavy = {"enabled": True, "mass_scale": {"range": [4.0, 4.0], "targets": ["cart"]}}
    nominal = roboreal.make("cartpole-balance", num_envs=1, seed=0)
    randomized = roboreal.make("cartpole-balance", num_envs=1, seed=0, randomization=heavy)
    for env in (nominal, randomized):
        env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(torch.ones(1, 1))
    # same push, four times the cart mass: much less cart velocity
    v_nominal = nominal.qvel[0, 0].item()
    v_heavy = randomized.qvel[0, 0].item()
    assert v_heavy < 0.5 * v_nominal


def test_action_latency_delays_actions_by_whole_steps():
    lag = {"enabled": True, "action_latency": {"range": [2, 2]}}
    env = roboreal.make("cartpole-balance", num_envs=1, seed=0, randomization=lag, pole_angle_limit=4.0)
    env.reset()
    env.sim.state[:, env.sim.qvel_slice] = 0.0
    env.sim.state[:, env.sim.qpos_slice] = 0.0
    env.step(torch.ones(1, 1))
    env.step(torch.zeros(1, 1))
    assert env.qvel[0, 0].item() == pytest.approx(0.0, abs=1e-9)  # the push has not arrived yet
    env.step(torch.zeros(1, 1))
    assert env.qvel[0, 0].item() > 0.1  # two steps later it does


@pytest.mark.parametrize("overrides, field", [
    ({"episode_lenght_s": 3.0}, "episode_lenght_s"),
    ({"rewards": {"no_such_term": 1.0}}, "rewards.no_such_term"),
    ({"randomization": {"friction": {"rang": [0, 1]}}}, "randomization.friction.rang"),
    ({"randomization": {"friction": {"range": "high"}}}, "randomization.friction.range"),
    ({"decimation": 2.5}, "decimation"),
    ({"observation_noise": {"nope": 0.1}}, "observation_noise.nope"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises((ConfigError, ValueError), match=field.replace(".", r"\.")):
        roboreal.make("cartpole-balance", num_envs=1, **overrides)


def test_unknown_task_and_backend_are_refused():
    with pytest.raises(ConfigError, match="unknown task"):
        roboreal.make("cartpole-balanse")
    with pytest.raises(ConfigError, match="backend"):
        roboreal.make("cartpole-balance", backend="physx")


def test_config_file_is_validated_with_the_file_named(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text("episode_length_s: 1.0\nrandomization:\n  enabled: true\n  mass_scale: {range: [2, 1]}\n")
    with pytest.raises(ConfigError, match="task.yaml.*randomization.mass_scale"):
        roboreal.make("cartpole-balance", config_file=f)
    f.write_text("episode_length_s: 1.0\n")
    env = roboreal.make("cartpole-balance", config_file=f)
    assert env.spec.max_episode_steps == 50


def test_discrete_cartpole_pushes_both_ways():
    env = roboreal.make("cartpole-balance-discrete", num_envs=2, seed=0)
    env.reset()
    for _ in range(3):
        env.step(torch.tensor([0, 1]))
    assert env.qvel[0, 0] < 0 < env.qvel[1, 0]
    with pytest.raises(ValueError):
        env.step(torch.tensor([0, 2]))


def test_go1_stands_on_its_default_pose_through_the_env():
    env = roboreal.make("go1-walk", num_envs=4, seed=0, randomization={"enabled": False})
    env.reset()
    for _ in range(100):  # 2 s at 50 Hz, zero action = default joint targets
        obs, reward, terminated, truncated, info = env.step(torch.zeros(4, 12))
        assert not terminated.any()
    assert (env.qpos[:, 2] > 0.2).all()
    assert env.foot_contacts.all()
    # projected gravity in the policy observation says "upright"
    assert (obs["policy"][:, 5] < -0.95).all()


def test_go1_tilted_base_terminates():
    env = roboreal.make("go1-walk", num_envs=2, seed=0)
    env.reset()
    tilt = 1.2  # rad of roll, beyond the spec's tilt limit
    env.sim.state[1, env.sim.qpos_slice.start + 3:env.sim.qpos_slice.start + 7] = [
        np.cos(tilt / 2), np.sin(tilt / 2), 0, 0]
    obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 12))
    assert terminated.tolist() == [False, True]
    assert info["terminations"]["tilt"] == pytest.approx(0.5)


def test_go1_randomization_is_on_by_default_and_inspectable():
    env = roboreal.make("go1-walk", num_envs=3, seed=5)
    got = env.randomizer.describe(2)
    assert {"friction", "added_mass", "motor_strength"} <= set(got)
    floor = env.model.geom("floor").id
    assert env.sim.models[2].geom_friction[floor, 0] == pytest.approx(got["friction"][0])


@pytest.mark.parametrize("floor", [0.3, 1.5])
def test_floor_friction_is_the_friction_of_the_feet_on_it(floor):
    """A draw below what the feet have (go1: 1.0) must reach the contact: MuJoCo would otherwise
    take the larger of the two geoms' frictions, and a slippery floor would grip like the feet."""
    env = roboreal.make("go1-walk", num_envs=2, seed=0, randomization={
        "enabled": True, "friction": {"range": [floor, floor], "targets": ["@floor"]}})
    env.reset()
    for _ in range(10):  # standing: every foot on the floor
        env.step(torch.zeros(2, 12))
    data = env.sim.data_for(1)
    floor_id = env.model.geom("floor").id
    feet = [c for c in data.contact[:data.ncon] if floor_id in (c.geom1, c.geom2)]
    assert len(feet) >= 3
    assert all(c.friction[0] == pytest.approx(floor) for c in feet)
    assert env.sim.model_of(1).geom_friction[env.model.geom("FR_foot").id, 0] == pytest.approx(1.0)


def test_panda_holds_pose_with_zero_action_and_goal_reward_is_consistent():
    env = roboreal.make("panda-reach-sparse", num_envs=2, seed=0)
    obs, _ = env.reset()
    start = env.joint_pos.clone()
    for _ in range(25):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(2, 7))
    assert (env.joint_pos - start).abs().max() < 0.02
    d = (obs["achieved_goal"] - obs["desired_goal"]).norm(dim=-1)
    assert torch.equal(reward, -(d > 0.05).float())
    assert torch.equal(info["is_success"], d <= 0.05)


def test_panda_pick_gripper_action_moves_the_fingers():
    env = roboreal.make("panda-pick", num_envs=2, seed=0)
    env.reset()
    act = torch.zeros(2, 8)
    act[0, 7], act[1, 7] = 1.0, -1.0  # open / close
    for _ in range(15):
        env.step(act)
    width = env._gripper_width()[:, 0]
    assert width[0] > 0.06 and width[1] < 0.01


@pytest.mark.parametrize("task", ALL_TASKS)
def test_single_env_passes_the_gymnasium_checker(task):
    import warnings

    from gymnasium.utils.env_checker import check_env

    from roboreal.envs.gym_adapters import GymEnv

    env = GymEnv(task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded Box observations are fine
        check_env(env, skip_render_check=True)
    env.close()


def test_batched_env_as_gymnasium_vector_env_and_sb3_vec_env():
    from roboreal.envs.gym_adapters import GymVectorEnv, make_sb3_vec_env

    venv = GymVectorEnv(roboreal.make("cartpole-balance", num_envs=4, seed=0))
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (4, 4)
    seen_final = False
    for _ in range(200):
        obs, reward, terminated, truncated, info = venv.step(np.ones((4, 1), dtype=np.float32))
        if "final_obs" in info:
            i = int(np.flatnonzero(info["_final_obs"])[0])
            assert abs(info["final_obs"][i][2]) > 0.2  # the pole fell in that final observation
            seen_final = True
    assert seen_final

    from stable_baselines3 import PPO

    sb3_env = make_sb3_vec_env("cartpole-balance", num_envs=4, seed=0)
    model = PPO("MlpPolicy", sb3_env, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256


def test_any_gymnasium_env_wraps_into_the_batched_contract():
    env = roboreal.make("gym:Pendulum-v1", num_envs=3, seed=0)
    obs, _ = env.reset()
    assert obs["policy"].shape == (3, 3) and env.spec.action_size == 1
    for step in range(1, 201):
        obs, reward, terminated, truncated, info = env.step(torch.ones(3, 1))
    assert truncated.all() and not terminated.any()  # Pendulum's 200-step time limit
    assert info["episode"]["length"].tolist() == [200, 200, 200]
    # the final observation is the last one of the old episode, not the reset one
    assert not torch.equal(info["final_observation"]["policy"], obs["policy"])
    discrete = roboreal.make("gym:CartPole-v1", num_envs=2)
    assert discrete.spec.action_type == "discrete" and discrete.spec.action_size == 2


def test_com_offset_moves_the_centre_of_mass_even_where_it_coincided_with_the_body_frame():
    # The Go1 trunk's inertial frame is its body frame, which MuJoCo's compiler flags
    # (body_sameframe) so that kinematics skips body_ipos; the randomizer must clear the
    # flag or the offset is silently ignored.
    import mujoco

    dr = {"enabled": True, "com_offset": {"range": [0.05, 0.05], "targets": ["trunk"]}}
    env = roboreal.make("go1-walk", num_envs=2, seed=0, randomization=dr)
    trunk = env.model.body("trunk").id
    data = env.sim.data_for(0)
    offset = data.xipos[trunk] - data.xpos[trunk]
    np.testing.assert_allclose(offset, data.xmat[trunk].reshape(3, 3) @ env.sim.models[0].body_ipos[trunk], atol=1e-12)
    assert np.linalg.norm(offset) == pytest.approx(np.linalg.norm([0.05, 0.05, 0.05]), rel=1e-6)
    assert env.sim.models[0].body_sameframe[trunk] == mujoco.mjtSameFrame.mjSAMEFRAME_NONE


def test_an_empty_mapping_clears_a_dict_field_and_a_partial_one_merges():
    env = roboreal.make("go1-walk", num_envs=1, observation_noise={})
    assert env.cfg.observation_noise == {}  # no observation noise, not "change nothing"
    env.close()
    env = roboreal.make("go1-walk", num_envs=1, observation_noise={"joint_vel": 0.5})
    assert env.cfg.observation_noise == {"base_ang_vel": 0.2, "projected_gravity": 0.05, "joint_pos": 0.01,
                                         "joint_vel": 0.5}
    env.close()


def test_observation_history_moves_each_step_and_restarts_with_each_episode():
    """`observation_history`: the last H values of a term, newest first. An env whose episode
    ends in a step reports its final observation with the old history and starts the next
    from the new episode's first value in all H places; the other envs' histories move on."""
    env = roboreal.make("go1-walk", num_envs=4, seed=0, observation_history={"projected_gravity": 3},
                        randomization={"enabled": False}, observation_noise={"projected_gravity": 0.0})
    where = 3  # policy layout: base_ang_vel (3), then projected_gravity (3 x 3)
    gravity = lambda o: o["policy"][:, where:where + 9].reshape(-1, 3, 3)  # noqa: E731
    obs, _ = env.reset()
    assert torch.equal(gravity(obs)[:, 0], gravity(obs)[:, 2])  # a new episode: H copies of its first value
    before = gravity(obs)
    upside_down = env.qpos[:2].clone()
    upside_down[:, 3:7] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # envs 0 and 1 end on the next step
    env.sim.reset_worlds(torch.arange(2), upside_down, torch.zeros_like(env.qvel[:2]))
    obs, _, terminated, _, info = env.step(torch.zeros(4, 12))
    assert terminated.tolist() == [True, True, False, False]
    final, now = gravity(info["final_observation"]), gravity(obs)
    assert torch.equal(final[:, 1:], before[:, :2])  # every env's history moved on by one step...
    assert (final[:2, 0, 2] > 0.9).all()  # ...to the upside-down value on the ending envs
    assert torch.equal(now[2:], final[2:])  # the others go on
    assert torch.equal(now[:2, 0], now[:2, 1]) and torch.equal(now[:2, 0], now[:2, 2])  # restarted
    assert (now[:2, 0, 2] < -0.9).all()  # upright again
