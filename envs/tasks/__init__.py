"""Built-in tasks (importing this module registers them)."""

from roboreal.envs.registry import register
from roboreal.envs.tasks.cartpole import CartpoleCfg, CartpoleEnv

register("cartpole-balance", CartpoleEnv, CartpoleCfg, "Balance a pole on a cart; continuous force.")
register("cartpole-balance-discrete", CartpoleEnv, CartpoleCfg, "Balance a pole on a cart; 2 discrete pushes (DQN).",
         discrete=True)
