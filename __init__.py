"""roboreal: sim-to-real robot learning (batched MuJoCo sim, RL/imitation, bundles, safety, ROS 2)."""

__version__ = "0.1.0"


def make(task: str, num_envs: int = 1, device: str = "cpu", backend: str = "mujoco", seed: int = 0, **overrides):
    """Create a batched env (see `roboreal.envs.make`)."""
    from roboreal.envs import make as _make

    return _make(task, num_envs=num_envs, device=device, backend=backend, seed=seed, **overrides)
