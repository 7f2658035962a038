"""Training speed, like for like: roboreal vs Stable-Baselines3 on the same env, clock and target.

Per case (one task + algorithm) three learners train from scratch, each in a fresh process:

- **SB3 zoo**: Stable-Baselines3 with the RL Zoo's published hyper-parameters for the
  closest zoo entry (below), `VecNormalize` where the zoo normalizes (its gamma = the
  algorithm's, as the zoo sets it), on the roboreal task through the Gymnasium/SB3
  adapter `roboreal.envs.gym_adapters.make_sb3_vec_env` wrapped in `VecMonitor`.
- **roboreal SB3-matched**: roboreal's own PPO/SAC on its native batched env with the SB3
  row's hyper-parameters wherever roboreal has the knob (`CASES[...].matched`), and the
  same number of envs as the SB3 row: this column against SB3 is the implementation speed.
- **roboreal tuned**: roboreal's shipped per-task config (`agents/configs/<algo>.yaml`,
  its own num_envs): this column against "matched" is what tuning adds.

Zoo entries (DLR-RM/rl-baselines3-zoo, hyperparams/*.yml):

- cartpole-ppo -> ppo.yml `CartPole-v1` ("Tuned"; the same cart-pole dynamics, limits,
  500-step episodes and 475 "solved" threshold; the zoo entry is for discrete actions,
  here SB3 uses its default diagonal-Gaussian head for the continuous force).
- panda-reach-ppo -> ppo.yml `Reacher-v2` (the zoo has no PPO entry for Fetch/Panda reach;
  Reacher is its tuned arm-reaching task with a dense -distance reward and 50-step
  episodes, like panda-reach). normalize: VecNormalize(obs, reward, gamma 0.9).
- panda-reach-sparse-sac-her -> sac.yml `FetchReach-v1` ("HER Robotics GoalEnvs": SAC +
  HerReplayBuffer future k=4, gamma 0.95, lr 1e-3, batch 256, net [64, 64], normalize).

Method (identical for all three learners):

- Clock: `time.perf_counter()` from just before the env and learner are built to just
  after training returned and everything was saved and closed: for roboreal what
  `agents.runner.train` does (Runner construction = env + algorithm, `run()`, `close()`;
  the Runner is a subclass that only adds the stop check), i.e. the loop, its periodic and
  final checkpoints incl. replay buffer, best.pt on every new best running mean (no SB3
  counterpart: a handicap to roboreal), TensorBoard, progress.csv, plot; for SB3 env +
  `VecMonitor`/`VecNormalize` + model construction, `model.learn` with a
  `CheckpointCallback` at the same env-step cadence as the roboreal-matched run (model,
  replay buffer, VecNormalize), and the final `model.save` + replay buffer + VecNormalize.
  Python imports happen before the clock, in every process alike.
- Target: the mean of the last `--window` (100) finished *training* episodes (return, or
  `is_success` at episode end on goal tasks) reaches the case's target, with at least
  `--min-episodes` (100) episodes seen, computed by one `TargetWindow` class fed by
  roboreal's episode statistics / SB3's `VecMonitor` infos (both come from the same env
  `EpisodeTracker`/`is_success`, so they are the same numbers).
- Granularity: the criterion is checked once per learner iteration, after the iteration's
  learning: every rollout for PPO (each learner's own rollout; SB3 and roboreal-matched
  have the same one), every 50 vector-env steps for SAC (roboreal's steps_per_iteration;
  SB3 checks at the same step counts). SB3 is checked at the first callback after the
  boundary, before that step's episodes are counted; the steps reported are the boundary's.
- Deterministic evaluation is off for all (`runner.eval_interval=0`; no EvalCallback).
- Stop: at the target, at the step budget, or when the clock passes `--sb3-cap` seconds
  (checked at the same boundaries; the name is kept, the cap applies to all three). The
  budget is the zoo's `n_timesteps` where a zoo schedule anneals over it (cartpole:
  `lin_` learning rate and clip range; roboreal-matched anneals its lr over the same
  horizon); otherwise none. roboreal-tuned has no budget (nothing in it depends on it).
- One torch thread per learner (`torch.set_num_threads(1)`, OMP/MKL 1); the simulator is
  the same roboreal MuJoCo batch in both (it steps 16+ worlds on its own thread pool).
- Ratios are SB3 time / roboreal time; "> x" when SB3 did not reach the target (its time is
  a lower bound), "< x" when roboreal did not, "n/a" when neither did.
- `--seeds N` runs seeds 0..N-1 (default 1 for time: one seed is an anecdote; use >= 3
  before quoting a ratio); the table shows medians, with "k/N" when not every seed reached.

Raw learner throughput (second table): env steps/s with learning on, no target, no
checkpoints, after a warm-up (one rollout; for SAC its learning_starts), over a fixed
number of env steps with each learner's batch: SB3 `model.learn`, roboreal
`Algorithm.iteration()` in a loop.

    python benchmarks/train_vs_sb3.py                         # all cases, 1 seed
    python benchmarks/train_vs_sb3.py --cases cartpole-ppo --seeds 3 --sb3-cap 1200
    python benchmarks/train_vs_sb3.py --quick                 # a few seconds per run: checks the code,
                                                              # and estimates a full run's duration
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

LEARNERS = ("sb3", "matched", "tuned")
LABELS = {"sb3": "SB3 zoo", "matched": "roboreal SB3-matched", "tuned": "roboreal tuned"}


@dataclass
class Case:
    task: str
    algo: str  # roboreal algorithm
    metric: str  # "return" | "success"
    target: float
    zoo_entry: str  # where the SB3 hyper-parameters come from
    zoo: dict[str, Any]  # the zoo entry, evaluated (schedules as "lin_x" strings)
    matched: dict[str, Any]  # roboreal overrides reproducing `zoo` (num_envs included)
    budget: int | None  # env steps for SB3 and matched (the zoo's n_timesteps when a schedule needs it)
    not_matched: str  # what roboreal cannot reproduce
    throughput_steps: int  # env steps timed in the throughput table (after warm-up)


CASES: dict[str, Case] = {
    "cartpole-ppo": Case(
        task="cartpole-balance", algo="ppo", metric="return", target=475.0,
        zoo_entry="rl-baselines3-zoo hyperparams/ppo.yml CartPole-v1",
        zoo={"n_envs": 8, "n_timesteps": 100_000, "policy": "MlpPolicy", "n_steps": 32, "batch_size": 256,
             "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0, "learning_rate": "lin_0.001",
             "clip_range": "lin_0.2"},
        # SB3 defaults where the zoo entry is silent: vf_coef 0.5, max_grad_norm 0.5, net [64, 64] tanh,
        # log_std_init 0 (std 1), orthogonal init, per-minibatch advantage normalization, no obs normalization.
        matched={"num_envs": 8, "num_steps": 32, "num_minibatches": 1, "num_epochs": 20, "gamma": 0.98,
                 "gae_lambda": 0.8, "learning_rate": 0.001, "lr_schedule": "linear", "clip_coef": 0.2,
                 "entropy_coef": 0.0, "value_coef": 0.5, "max_grad_norm": 0.5, "normalize_obs": False,
                 "actor_hidden": [64, 64], "critic_hidden": [64, 64], "activation": "tanh", "init_std": 1.0,
                 "clip_value_loss": False},
        budget=100_000,
        not_matched="clip range fixed 0.2 (zoo: linear 0.2->0); actor and critic gradients clipped separately",
        throughput_steps=16_384),
    "panda-reach-ppo": Case(
        task="panda-reach", algo="ppo", metric="success", target=0.9,
        zoo_entry="rl-baselines3-zoo hyperparams/ppo.yml Reacher-v2 (no PPO reach entry for Fetch/Panda)",
        zoo={"normalize": True, "n_envs": 1, "policy": "MultiInputPolicy", "n_timesteps": 1_000_000,
             "batch_size": 32, "n_steps": 512, "gamma": 0.9, "learning_rate": 0.000104019,
             "ent_coef": 7.52585e-08, "clip_range": 0.3, "n_epochs": 5, "gae_lambda": 1.0, "max_grad_norm": 0.9,
             "vf_coef": 0.950368},
        matched={"num_envs": 1, "num_steps": 512, "num_minibatches": 16, "num_epochs": 5, "gamma": 0.9,
                 "gae_lambda": 1.0, "learning_rate": 0.000104019, "lr_schedule": "fixed", "clip_coef": 0.3,
                 "entropy_coef": 7.52585e-08, "value_coef": 0.950368, "max_grad_norm": 0.9, "normalize_obs": True,
                 "obs_clip": 10.0, "actor_hidden": [64, 64], "critic_hidden": [64, 64], "activation": "tanh",
                 "init_std": 1.0, "asymmetric": False, "clip_value_loss": False},
        budget=None,
        not_matched="no reward normalization (VecNormalize norm_reward); actor reads observation+desired_goal "
                    "(SB3 MultiInputPolicy also achieved_goal); gradients clipped per network",
        throughput_steps=8_192),
    "panda-reach-sparse-sac-her": Case(
        task="panda-reach-sparse", algo="sac", metric="success", target=0.9,
        zoo_entry="rl-baselines3-zoo hyperparams/sac.yml FetchReach-v1 (HER robotics GoalEnvs)",
        zoo={"n_envs": 1, "n_timesteps": 20_000, "policy": "MultiInputPolicy", "buffer_size": 1_000_000,
             "ent_coef": "auto", "batch_size": 256, "gamma": 0.95, "learning_rate": 0.001, "learning_starts": 1000,
             "normalize": True, "replay_buffer_class": "HerReplayBuffer",
             "replay_buffer_kwargs": {"goal_selection_strategy": "future", "n_sampled_goal": 4},
             "policy_kwargs": {"net_arch": [64, 64]}},
        # SB3 defaults where the zoo entry is silent: tau 0.005, train_freq 1, gradient_steps 1 (UTD 1),
        # ent_coef auto starting at 1.0, target entropy -action_dim, ReLU, one lr for actor, critic and alpha.
        matched={"num_envs": 1, "buffer_size": 1_000_000, "batch_size": 256, "gamma": 0.95, "tau": 0.005,
                 "actor_lr": 0.001, "critic_lr": 0.001, "alpha_lr": 0.001, "autotune": True, "alpha": 1.0,
                 "learning_starts": 1000, "steps_per_iteration": 50, "utd_ratio": 1.0, "actor_update_interval": 1,
                 "hidden": [64, 64], "activation": "relu", "normalize_obs": True, "obs_clip": 10.0,
                 "target_q_clip": None, "her.enabled": True, "her.strategy": "future", "her.k": 4},
        budget=None,
        not_matched="no reward normalization (VecNormalize norm_reward)",
        throughput_steps=3_000),
}

SAC_CHECK_EVERY = 50  # vector-env steps between checks for off-policy learners (roboreal's steps_per_iteration)


class TargetWindow:
    """The stopping criterion, the same object on both sides: running mean of the last
    `window` finished training episodes >= target, once `min_episodes` have finished."""

    def __init__(self, target: float, window: int, min_episodes: int):
        self.target, self.min_episodes = target, min_episodes
        self.values: deque = deque(maxlen=window)
        self.episodes = 0

    def add(self, values) -> None:
        values = [float(v) for v in values]
        self.values.extend(values)
        self.episodes += len(values)

    def reached(self) -> bool:
        return self.episodes >= self.min_episodes and sum(self.values) / len(self.values) >= self.target

    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")


# ----------------------------------------------------------------------------------------------
# roboreal

def roboreal_config(case: Case, learner: str, seed: int, threads: int = 1):
    from roboreal.agents.run_config import resolve_config

    over: dict[str, Any] = {"runner.eval_interval": 0, "runner.num_threads": threads}
    budget = None
    if learner == "matched":
        over.update(case.matched)
        budget = case.budget
    return resolve_config(case.task, case.algo, over, seed=seed, total_steps=budget or 10**12)


def iteration_steps(algo_cfg, num_envs: int, algo: str) -> int:
    """Env steps per roboreal iteration (= the check granularity)."""
    per_env = algo_cfg.num_steps if algo == "ppo" else algo_cfg.steps_per_iteration
    return per_env * num_envs


def roboreal_to_target(case: Case, learner: str, seed: int, cap_s: float, window: int, min_episodes: int) -> dict:
    from roboreal.agents.runner import Runner

    key = "success" if case.metric == "success" else "return"
    cfg = roboreal_config(case, learner, seed)
    judge = TargetWindow(case.target, window, min_episodes)
    out: dict[str, Any] = {"num_envs": cfg.num_envs, "chunk": iteration_steps(cfg.algorithm_config(), cfg.num_envs,
                                                                               case.algo)}

    class TargetRunner(Runner):
        """`train()`'s Runner, plus the stopping check after every iteration's episode
        bookkeeping: on the target or the cap it sets total_steps to the current step, so
        the loop ends normally at this iteration (final checkpoint, logs and plot included)."""

        def _record_episodes(self, episodes: dict) -> None:
            super()._record_episodes(episodes)
            if "stop" in out:
                return
            if key in episodes:
                judge.add(episodes[key].tolist())
            now = time.perf_counter() - t0
            if judge.reached():
                out.update(stop="target", steps=self.state.global_step)
            elif now >= cap_s:
                out.update(stop="cap", steps=self.state.global_step)
            if "stop" in out:
                self.cfg.total_steps = self.state.global_step

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        runner = TargetRunner(cfg, tmp, progress=False)  # train(cfg, tmp): Runner + run() + close()
        out["setup_s"] = time.perf_counter() - t0
        try:
            runner.run()
        finally:
            runner.close()
        out["time"] = time.perf_counter() - t0
        out.setdefault("stop", "budget")
        out.setdefault("steps", runner.state.global_step)
    out.update(reached=out["stop"] == "target", mean=judge.mean(), episodes=judge.episodes)
    return out


def roboreal_throughput(case: Case, learner: str, seed: int, steps: int) -> dict:
    from roboreal.agents.runner import Runner

    cfg = roboreal_config(case, learner, seed)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(cfg, tmp, progress=False)
        try:
            algo = runner.algo
            warm = getattr(algo.cfg, "learning_starts", 0)
            algo.iteration()
            while algo.global_step < warm:
                algo.iteration()
            algo.pop_episodes()
            start, t0 = algo.global_step, time.perf_counter()
            while algo.global_step - start < steps:
                algo.iteration()
                algo.pop_episodes()
            dt = time.perf_counter() - t0
            done = algo.global_step - start
        finally:
            runner.close()
    return {"sps": done / dt, "steps": done, "time": dt, "num_envs": cfg.num_envs}


# ----------------------------------------------------------------------------------------------
# Stable-Baselines3

def _linear(initial: float):
    def schedule(progress_remaining: float) -> float:  # the zoo's lin_<x>: x * progress_remaining
        return progress_remaining * initial

    return schedule


def sb3_build(case: Case, seed: int):
    """(model, venv, VecNormalize or None, n_envs) from the zoo entry, as rl_zoo3 builds them."""
    from stable_baselines3 import PPO, SAC, HerReplayBuffer
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    from roboreal.envs.gym_adapters import make_sb3_vec_env

    hp = dict(case.zoo)
    n_envs = hp.pop("n_envs", 1)
    hp.pop("n_timesteps")
    policy = hp.pop("policy")
    normalize = hp.pop("normalize", False)
    for k in ("learning_rate", "clip_range"):
        if isinstance(hp.get(k), str) and hp[k].startswith("lin_"):
            hp[k] = _linear(float(hp[k][4:]))
    if hp.get("replay_buffer_class") == "HerReplayBuffer":
        hp["replay_buffer_class"] = HerReplayBuffer
    venv = VecMonitor(make_sb3_vec_env(case.task, num_envs=n_envs, seed=seed))
    vecnorm = None
    if normalize:  # rl_zoo3: VecNormalize(**normalize_kwargs) with gamma = the algorithm's gamma
        venv = vecnorm = VecNormalize(venv, gamma=hp.get("gamma", 0.99))
    cls = PPO if case.algo == "ppo" else SAC
    model = cls(policy, venv, seed=seed, device="cpu", verbose=0, **hp)
    return model, venv, vecnorm, n_envs


def sb3_to_target(case: Case, seed: int, cap_s: float, window: int, min_episodes: int, chunk_matched: int,
                  save_every: int) -> dict:
    """`chunk_matched`: env steps per check (the roboreal-matched iteration); `save_every`: env
    steps between checkpoints (the roboreal-matched cadence)."""
    import torch  # noqa: F401
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback

    out: dict[str, Any] = {}
    judge = TargetWindow(case.target, window, min_episodes)

    class Target(BaseCallback):
        def _on_step(self) -> bool:
            n = self.training_env.num_envs
            boundary = self.num_timesteps - n  # steps collected *and learned from* before this callback's step
            if boundary > 0 and boundary % chunk == 0:
                if judge.reached():
                    out.update(stop="target", steps=boundary)
                    return False
                if time.perf_counter() - t0 >= cap_s:
                    out.update(stop="cap", steps=boundary)
                    return False
            for done, info in zip(self.locals["dones"], self.locals["infos"]):
                if done:
                    judge.add([info.get("is_success", 0.0) if case.metric == "success" else info["episode"]["r"]])
            return True

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, venv, vecnorm, n_envs = sb3_build(case, seed)
        chunk = chunk_matched if case.algo == "ppo" else SAC_CHECK_EVERY * n_envs
        out["num_envs"], out["chunk"] = n_envs, chunk
        ckpt = CheckpointCallback(save_freq=max(1, save_every // n_envs), save_path=tmp, name_prefix="ckpt",
                                  save_replay_buffer=case.algo != "ppo", save_vecnormalize=vecnorm is not None)
        out["setup_s"] = time.perf_counter() - t0
        budget = case.budget or 10**12
        model.learn(total_timesteps=budget, callback=CallbackList([Target(), ckpt]))
        if "stop" not in out:  # ended at the budget: the check of its last iteration
            out.update(stop="target" if judge.reached() else "budget", steps=model.num_timesteps)
        model.save(os.path.join(tmp, "final"))
        if case.algo != "ppo":
            model.save_replay_buffer(os.path.join(tmp, "final_replay"))
        if vecnorm is not None:
            vecnorm.save(os.path.join(tmp, "final_vecnormalize.pkl"))
        venv.close()
        out["time"] = time.perf_counter() - t0
    out.update(reached=out["stop"] == "target", mean=judge.mean(), episodes=judge.episodes)
    return out


def sb3_throughput(case: Case, seed: int, steps: int) -> dict:
    model, venv, _, n_envs = sb3_build(case, seed)
    try:
        warm = max(case.zoo.get("learning_starts", 0), 1) + n_envs
        model.learn(total_timesteps=warm)
        start, t0 = model.num_timesteps, time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        dt = time.perf_counter() - t0
        done = model.num_timesteps - start
    finally:
        venv.close()
    return {"sps": done / dt, "steps": done, "time": dt, "num_envs": n_envs}


# ----------------------------------------------------------------------------------------------
# one measurement per fresh process

def _preload() -> None:
    """Every module either learner imports lazily, imported before any clock starts, in
    every process alike (the clocks time building and training, not Python imports)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (roboreal's learning_curve.png)
    import stable_baselines3  # noqa: F401
    import stable_baselines3.common.callbacks  # noqa: F401
    import stable_baselines3.common.vec_env  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401  (roboreal's TensorBoard log)

    import roboreal.agents.her  # noqa: F401
    import roboreal.agents.ppo  # noqa: F401
    import roboreal.agents.runner  # noqa: F401
    import roboreal.agents.sac  # noqa: F401
    import roboreal.envs  # noqa: F401
    import roboreal.envs.gym_adapters  # noqa: F401


def _job(kind: str, name: str, learner: str, seed: int, args: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    _preload()
    case = CASES[name]
    if kind == "throughput":
        if learner == "sb3":
            return sb3_throughput(case, seed, args["steps"])
        return roboreal_throughput(case, learner, seed, args["steps"])
    if learner == "sb3":
        return sb3_to_target(case, seed, args["cap"], args["window"], args["min_episodes"], args["chunk"],
                             args["save_every"])
    return roboreal_to_target(case, learner, seed, args["cap"], args["window"], args["min_episodes"])


def run_job(kind: str, name: str, learner: str, seed: int, **args) -> dict:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(_job, kind, name, learner, seed, args).result()
    result["process_s"] = time.perf_counter() - t0
    return result


def matched_cadence(name: str) -> tuple[int, int]:
    """(env steps per roboreal-matched iteration, env steps between its checkpoints)."""
    case = CASES[name]
    cfg = roboreal_config(case, "matched", 0)
    chunk = iteration_steps(cfg.algorithm_config(), cfg.num_envs, case.algo)
    return chunk, chunk * cfg.runner.save_interval


# ----------------------------------------------------------------------------------------------
# report

def _median_time(results: list[dict]) -> tuple[float, bool]:
    """Median wall-clock to target over seeds; a seed that did not reach counts as infinite."""
    times = sorted(r["time"] if r["reached"] else math.inf for r in results)
    med = statistics.median(times)
    return (med, True) if math.isfinite(med) else (max(r["time"] for r in results), False)


def _cell(results: list[dict]) -> tuple[str, str]:
    t, ok = _median_time(results)
    k = sum(r["reached"] for r in results)
    steps = statistics.median(r["steps"] for r in results if r["reached"]) if k else max(r["steps"] for r in results)
    tag = "" if k == len(results) else f" ({k}/{len(results)})"
    if ok:
        return f"{steps:,.0f}{tag}", f"{t:.1f}{tag}"
    why = sorted({r["stop"] for r in results if not r["reached"]})
    return f"> {steps:,.0f}", f"> {t:.1f} ({'/'.join(why)})"


def _ratio(ref: list[dict], ours: list[dict]) -> str:
    tr, ok_r = _median_time(ref)
    to, ok_o = _median_time(ours)
    if ok_r and ok_o:
        return f"{tr / to:.2f}x"
    if ok_o:  # SB3 did not reach: its time is a lower bound
        return f"> {tr / to:.2f}x"
    if ok_r:
        return f"< {tr / to:.2f}x"
    return "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--sb3-cap", "--cap", dest="cap", type=float, default=None,
                   help="seconds of wall clock before any learner is stopped (default 1800; --quick: 4)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per learner (default 1, for time)")
    p.add_argument("--window", type=int, default=100, help="finished training episodes in the running mean")
    p.add_argument("--min-episodes", type=int, default=100, help="episodes needed before the target can count")
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    p.add_argument("--no-throughput", action="store_true", help="skip the raw throughput table")
    p.add_argument("--quick", action="store_true",
                   help="every run a few seconds (code check) + an estimate of the full run's duration")
    args = p.parse_args()
    cap = args.cap if args.cap is not None else (4.0 if args.quick else 1800.0)
    seeds = list(range(args.seeds))

    print("$ " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(f"torch threads: 1 per learner (one process each); cap {cap:.0f} s; target window: last {args.window} "
          f"training episodes, >= {args.min_episodes} episodes; seeds {seeds}; deterministic evaluation off")
    if args.quick:
        print("QUICK MODE: runs are cut at the cap and tiny throughput batches: the numbers check the code, "
              "they are not results")
    print(flush=True)

    rows: dict[str, dict[str, list[dict]]] = {}
    thr: dict[str, dict[str, dict]] = {}
    wall0 = time.perf_counter()
    for name in args.cases:
        case = CASES[name]
        chunk, save_every = matched_cadence(name)
        rows[name] = {}
        for learner in args.learners:
            rows[name][learner] = []
            for seed in seeds:
                r = run_job("target", name, learner, seed, cap=cap, window=args.window,
                            min_episodes=args.min_episodes, chunk=chunk, save_every=save_every)
                rows[name][learner].append(r)
                print(f"{name:28s} {LABELS[learner]:22s} seed {seed}: {r['stop']:6s} steps {r['steps']:>9,d}  "
                      f"wall {r['time']:7.1f} s (set-up {r['setup_s']:.1f} s)  envs {r['num_envs']:3d}  "
                      f"check every {r['chunk']} steps  window mean {r['mean']:.3f} over {r['episodes']} episodes",
                      flush=True)
        if not args.no_throughput:
            thr[name] = {}
            steps = max(chunk, case.throughput_steps // 8) if args.quick else case.throughput_steps
            for learner in args.learners:
                r = run_job("throughput", name, learner, 0, steps=steps)
                thr[name][learner] = r
                print(f"{name:28s} {LABELS[learner]:22s} throughput: {r['sps']:8,.0f} env steps/s "
                      f"({r['steps']:,} steps in {r['time']:.1f} s, {r['num_envs']} envs)", flush=True)
    total = time.perf_counter() - wall0

    print("\n### Time to target (wall clock incl. set-up and checkpoints; medians over seeds)\n")
    head = "| case | target | envs (SB3 / matched / tuned) |"
    sep = "|---|---|---|"
    for learner in args.learners:
        head += f" {LABELS[learner]} steps | {LABELS[learner]} s |"
        sep += "---:|---:|"
    ratios = [l for l in ("matched", "tuned") if l in args.learners and "sb3" in args.learners]
    for l in ratios:
        head += f" SB3 / {LABELS[l]} |"
        sep += "---:|"
    print(head + "\n" + sep)
    for name, res in rows.items():
        case = CASES[name]
        envs = " / ".join(str(res[l][0]["num_envs"]) if l in res else "-" for l in LEARNERS)
        line = f"| {name} | {case.metric} >= {case.target:g} | {envs} |"
        for learner in args.learners:
            s, t = _cell(res[learner])
            line += f" {s} | {t} |"
        for l in ratios:
            line += f" {_ratio(res['sb3'], res[l])} |"
        print(line)

    if thr:
        print("\n### Raw learner throughput (env steps/s, learning on, no target, no checkpoints)\n")
        head = "| case |" + "".join(f" {LABELS[l]} |" for l in args.learners)
        if "sb3" in args.learners and "matched" in args.learners:
            head += " matched / SB3 |"
        print(head + "\n|---|" + "---:|" * (head.count("|") - 2))
        for name, res in thr.items():
            line = f"| {name} |" + "".join(f" {res[l]['sps']:,.0f} ({res[l]['num_envs']} envs) |"
                                           for l in args.learners)
            if "sb3" in args.learners and "matched" in args.learners:
                line += f" {res['matched']['sps'] / res['sb3']['sps']:.2f}x |"
            print(line)

    print("\nSB3 rows: " + "; ".join(f"{n}: {CASES[n].zoo_entry}" for n in rows))
    print("Not reproducible in roboreal (matched rows): " + "; ".join(f"{n}: {CASES[n].not_matched}" for n in rows))
    print(f"\nthis run: {total / 60:.1f} min")
    if args.quick and thr:
        estimate_full(rows, thr, args, cap_full=args.cap or 1800.0)


def estimate_full(rows, thr, args, cap_full: float) -> None:
    """Upper bound of a full run from the quick one: a to-target run that reached its target
    within the quick cap takes as long again; any other lasts at most min(cap, budget /
    measured learning throughput); plus each run's measured process and set-up overhead;
    the throughput runs last their step count / throughput plus their overhead."""
    total = 0.0
    parts = []
    for name, res in rows.items():
        case = CASES[name]
        sub = 0.0
        for learner, results in res.items():
            r = results[0]
            sps = thr[name][learner]["sps"]
            budget = case.budget if learner != "tuned" else None
            if r["reached"]:  # reached within the quick cap: a full run takes as long
                run = r["time"]
            elif budget and budget / sps + r["setup_s"] < cap_full:
                run = budget / sps + r["setup_s"]
            else:
                run = cap_full
            sub += (run + r["process_s"] - r["time"]) * args.seeds  # + process start and imports
            t = thr[name][learner]
            sub += case.throughput_steps / sps + (t["process_s"] - t["time"])
        parts.append(f"{name} {sub / 60:.0f} min")
        total += sub
    print(f"estimated full run (same cases, {args.seeds} seed(s), cap {cap_full:.0f} s): at most "
          f"{total / 60:.0f} min ({', '.join(parts)}); a learner that reaches its target early ends sooner")


if __name__ == "__main__":
    main()
