"""cartpole-balance: keep the pole upright by pushing the cart (the lecture slides' cart-pole).

State (observation): cart position, cart velocity, pole angle, pole angular velocity.
Action: force on the cart (continuous, scaled to +-10 N), or two discrete actions
(push left / push right with 10 N) in `cartpole-balance-discrete`.
Episode ends when the pole tilts beyond 12 degrees or the cart leaves +-2.4 m
(terminated), or after 500 control steps at 50 Hz (truncated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from roboreal.envs.mujoco_env import MujocoTaskEnv, ObsTerm, TaskCfg
from roboreal.robots.needs import RobotNeeds
from roboreal.control.action import ActionMapping


@dataclass
class CartpoleCfg(TaskCfg):
    robot: str = "cartpole"
    episode_length_s: float = 10.0
    physics_dt: float = 0.01
    decimation: int = 2  # 50 Hz control
    rewards: dict[str, float] = field(default_factory=lambda: {"alive": 1.0, "pole_angle": 0.0, "cart_position": 0.0})
    max_force: float = 10.0
    pole_angle_limit: float = 12.0 * math.pi / 180.0
    cart_position_limit: float = 2.4
    initial_state_range: float = 0.05  # uniform +- on all four state variables
    discrete: bool = False


class CartpoleEnv(MujocoTaskEnv):
    task_name = "cartpole-balance"
    needs = RobotNeeds(kinds=("cartpole",), control_mode="force")
    cfg: CartpoleCfg

    def _action_mapping(self) -> ActionMapping:
        return ActionMapping.for_robot(self.robot, "force", self.cfg.max_force)

    def _action_size(self) -> int:
        return 2 if self.cfg.discrete else 1

    def _action_type(self) -> str:
        return "discrete" if self.cfg.discrete else "continuous"

    def _prepare_actions(self, actions: torch.Tensor) -> torch.Tensor:
        if self.cfg.discrete:
            a = torch.as_tensor(actions, device=self.device).reshape(self.num_envs).long()
            if ((a < 0) | (a > 1)).any():
                raise ValueError("cartpole-balance-discrete: actions must be 0 (left) or 1 (right)")
            # Stored as a one-hot so last-action buffers keep a fixed float layout.
            return torch.nn.functional.one_hot(a, 2).float()
        return super()._prepare_actions(actions)

    def discrete_action_values(self) -> torch.Tensor:
        """The normalized force each discrete action stands for: left -1, right +1."""
        return torch.tensor([[-1.0], [1.0]])

    def _action_to_ctrl(self, actions: torch.Tensor) -> torch.Tensor:
        if self.cfg.discrete:  # one-hot (left, right) -> the normalized force -1 / +1
            actions = (actions[:, 1] - actions[:, 0])[:, None]
        return self.action_mapping.to_command(actions)

    @property
    def pole_angle(self) -> torch.Tensor:
        # wrap to (-pi, pi]
        return torch.atan2(torch.sin(self.qpos[:, 1]), torch.cos(self.qpos[:, 1]))

    def _observation_terms(self) -> dict[str, list[ObsTerm]]:
        return {"policy": [
            ObsTerm("cart_position", "joint_states.position[slider]"),
            ObsTerm("cart_velocity", "joint_states.velocity[slider]"),
            ObsTerm("pole_angle", "joint_states.position[hinge]", wrap=True),  # the hinge is unlimited
            ObsTerm("pole_angular_velocity", "joint_states.velocity[hinge]"),
        ]}

    def _initial_state(self, env_ids: torch.Tensor):
        r = self.cfg.initial_state_range
        n = len(env_ids)
        return self.rand(n, 2, low=-r, high=r), self.rand(n, 2, low=-r, high=r)

    def _terminations(self) -> dict[str, torch.Tensor]:
        return {
            "pole_fell": self.pole_angle.abs() > self.cfg.pole_angle_limit,
            "cart_out_of_bounds": self.qpos[:, 0].abs() > self.cfg.cart_position_limit,
        }

    def _success(self) -> torch.Tensor:
        # Success = the pole is still up at the end of the episode.
        return self.episode_step >= self.max_episode_steps

    # ----- reward terms -----
    def _reward_alive(self) -> torch.Tensor:
        return torch.ones(self.num_envs, device=self.device)

    def _reward_pole_angle(self) -> torch.Tensor:
        return self.pole_angle.square()

    def _reward_cart_position(self) -> torch.Tensor:
        return self.qpos[:, 0].square()
