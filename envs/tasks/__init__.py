"""Built-in tasks (importing this module registers them)."""

from roboreal.envs.registry import register
from roboreal.envs.tasks.cartpole import CartpoleCfg, CartpoleEnv

register("cartpole-balance", CartpoleEnv, CartpoleCfg, "Balance a pole on a cart; continuous force.")
register("cartpole-balance-discrete", CartpoleEnv, CartpoleCfg, "Balance a pole on a cart; 2 discrete pushes (DQN).",
         discrete=True)
from roboreal.envs.tasks.go1 import Go1WalkCfg, Go1WalkEnv
from roboreal.envs.tasks.panda import (PandaPickCfg, PandaPickEnv, PandaPickVisionCfg, PandaPickVisionEnv, PandaReachCfg,
                                      PandaReachEnv, PandaReachVisionCfg, PandaReachVisionEnv)

SPARSE = {"distance": 0.0, "not_reached": -1.0}
register("panda-reach", PandaReachEnv, PandaReachCfg, "Panda: move the end-effector to a goal; dense reward.")
register("panda-reach-sparse", PandaReachEnv, PandaReachCfg, "Panda: reach a goal; sparse reward (HER).",
         rewards=SPARSE)
register("panda-reach-vision", PandaReachVisionEnv, PandaReachVisionCfg,
          "Panda: reach a goal seen in the images (overview + wrist cameras, no goal vector); dense reward.")
register("panda-pick", PandaPickEnv, PandaPickCfg, "Panda: pick the cube from the bin, place it at a goal; sparse.",
         rewards=SPARSE)
register("panda-pick-vision", PandaPickVisionEnv, PandaPickVisionCfg,
         "Panda: pick from pixels (front + wrist cameras, no object pose); sparse.", rewards=SPARSE)
register("go1-walk", Go1WalkEnv, Go1WalkCfg, "Go1: track commanded base velocity (vx, vy, yaw rate), flat ground.")
