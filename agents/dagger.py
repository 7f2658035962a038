"""DAgger (Ross, Gordon & Bagnell 2011) and HG-DAgger (Kelly et al. 2019) on batched envs.

Behaviour cloning trains on the states the *expert* visits; the learner's small mistakes
take it to states the expert never showed, where it errs more ("compounding errors",
quadratic in the horizon). DAgger labels the states the *learner* visits:

    round 0: D <- expert demonstrations (beta = 1); pi_1 <- BC(D)
    round i: roll out pi_mix = beta_i * expert + (1 - beta_i) * pi_i  (per step: the expert's
             action is executed with probability beta_i); the expert labels *every* visited
             state; D <- D u D_i (aggregation); pi_{i+1} <- BC(D) (retrained from scratch)

- beta schedules: ``exponential`` (beta_i = decay^i, the paper's p^(i-1); the default),
  ``constant`` (beta_i = beta), ``linear`` (1 -> 0 over ``beta_rounds`` rounds),
  ``indicator`` (beta = 1 in round 0 only, which the paper found works well on its tasks).
  Measured here (see ``roboreal.agents.imitation_benchmark``): with a weak round-0 policy,
  pure learner rollouts (indicator) visit states whose labels do not help (a pick learner
  knocking the cube around); mixing the expert in keeps the rollouts near useful states
  while still labelling the learner's own mistakes, and wins clearly.
- Warm start (``warm_start``): continue training the previous round's network on the
  aggregate (its normalizer kept) instead of retraining from scratch, for speed.
- HG-DAgger (``gate_threshold``): a (simulated) human watches the learner and takes over
  when the learner's action strays from the expert's by more than the threshold (inf-norm,
  normalized action units), handing control back below ``gate_release``; only takeover
  steps carry expert labels, exactly like an intervention recorded on the real robot.
- Human / robot data: a dataset recorded on the robot (`roboreal.data`:
  ``expert_actions`` finite at the human's takeover steps, ``intervention`` flags) is
  aggregated with everything else by the same trainer (``datasets=[...]``, with or
  without an online expert).
- DART-style noise (``dart_noise``, Laskey et al. 2017) can perturb the *executed* expert
  action while the clean expert action is recorded as the label.

From pixels (a task with image observations, e.g. ``panda-pick-vision``; ``bc.images``,
default ``auto`` = the task's cameras): the student is BC's image policy, reading the
``policy`` group and the camera images; the expert is the scripted one (it reads the
simulator) or a privileged teacher (``--expert RUN --expert-obs-group critic``: a state
policy on the ``critic`` group, which keeps the object pose the student must see). The
rollouts record the images into the dataset like any other observation group.

Everything every round collects is appended to ``RUN_DIR/data.hdf5`` (the dataset format,
``round`` and ``beta`` in each episode's attributes), so the aggregate is inspectable
with ``roboreal data info`` and re-trainable with ``roboreal bc``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from roboreal.agents.bc import BCConfig, evaluate_policy, plot_curves, run_meta, save_checkpoint, train_bc, write_metrics
from roboreal.agents.policy import policy_action
from roboreal.agents.vision import resolve_image_inputs
from roboreal.agents.run_config import write_run_config
from roboreal.agents.run_logs import write_progress_csv
from roboreal.agents.experts import Expert
from roboreal.config import ConfigError, to_dict
from roboreal.data import (BatchedRecorder, DatasetReader, DatasetWriter, TransitionSet, check_compatible,
                                        dataset_meta, require_labels)


@dataclass
class DAggerConfig:
    rounds: int = 4  # rounds of learner rollouts after the initial demonstrations
    initial_episodes: int = 8  # expert demonstrations of round 0 (0: start from the given datasets)
    episodes_per_round: int = 8  # episodes rolled out (and labelled) per round
    num_envs: int = 8  # parallel envs for rollouts
    beta_schedule: Literal["exponential", "constant", "linear", "indicator"] = "exponential"
    beta_decay: float = 0.5  # exponential: beta_i = decay^i
    beta: float = 0.5  # constant: beta_i = beta for every round after the demonstrations
    beta_rounds: int = 4  # linear: beta reaches 0 at this round
    mixing: Literal["step", "episode"] = "step"  # beta picks the expert per step or per whole episode
    gate_threshold: float | None = None  # HG-DAgger: takeover when |a_learner - a_expert|_inf exceeds this
    gate_release: float | None = None  # hand back when below (default: half the threshold)
    dart_noise: float = 0.0  # std of noise on executed expert actions (labels stay clean)
    warm_start: bool = False  # continue the previous round's network (normalizer kept) instead of retraining
    warm_start_epochs: int | None = None  # epochs per warm-started round (default: bc.max_epochs)
    eval_episodes: int = 64  # deterministic evaluation of each round's policy (not counted as labels)
    eval_seed: int = 12345
    bc: BCConfig = field(default_factory=BCConfig)

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError("rounds", f"must be >= 0, got {self.rounds}")
        if self.num_envs < 1:
            raise ConfigError("num_envs", f"must be >= 1, got {self.num_envs}")
        if not 0.0 < self.beta_decay <= 1.0:
            raise ConfigError("beta_decay", f"must be in (0, 1], got {self.beta_decay}")
        if not 0.0 <= self.beta <= 1.0:
            raise ConfigError("beta", f"must be in [0, 1], got {self.beta}")
        if self.gate_threshold is not None and self.gate_threshold <= 0:
            raise ConfigError("gate_threshold", f"must be > 0, got {self.gate_threshold}")
        if self.bc.labels == "executed":
            # the executed actions of learner rollouts (and of a robot session) are the policy's own
            raise ConfigError("bc.labels", "DAgger learns only from expert/human labels; 'executed' would train the "
                                           "learner on its own actions (use 'auto' or 'expert')")


def beta_for_round(cfg: DAggerConfig, i: int) -> float:
    """Probability of executing the expert's action in round `i` (round 0: the demonstrations)."""
    if i == 0:
        return 1.0
    if cfg.beta_schedule == "exponential":
        return float(cfg.beta_decay ** i)
    if cfg.beta_schedule == "constant":
        return float(cfg.beta)
    if cfg.beta_schedule == "linear":
        return float(max(0.0, 1.0 - i / max(cfg.beta_rounds, 1)))
    return 0.0  # indicator


@torch.no_grad()
def rollout(env, expert: Expert | None, recorder: BatchedRecorder, episodes: int, learner=None,
            learner_group: str = "policy", beta: float = 1.0, mixing: str = "step",
            gate_threshold: float | None = None, gate_release: float | None = None, dart_noise: float = 0.0,
            seed: int = 0) -> dict:
    """Roll out until `episodes` episodes are recorded; returns counts.

    Per step: the expert labels the state (unless gated), the learner proposes, beta
    (or the gate) decides which action is executed, and the recorder stores executed
    action, expert label, learner proposal and whether the expert's action was executed
    instead of the learner's (``intervention``).
    """
    if expert is None and learner is None:
        raise ConfigError("expert", "a rollout needs an expert or a learner")
    gen = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    ep_expert = torch.rand(n, generator=gen) < beta  # per-episode mixing
    gated = torch.zeros(n, dtype=torch.bool)
    release = gate_release if gate_release is not None else (gate_threshold or 0.0) / 2
    steps = 0
    start = recorder.written
    recorder.clear_running()
    # every env records its share of the episodes (an early-terminating env does not take more than its share)
    quota = torch.full((n,), episodes // n, dtype=torch.long)
    quota[: episodes % n] += 1
    finished = torch.zeros(n, dtype=torch.long)
    while recorder.written - start < episodes:
        a_exp = expert.act(obs, env).cpu() if expert is not None else None
        a_pol = policy_action(learner, obs, learner_group).cpu().float() if learner is not None else None
        nan = torch.full((n, env.spec.action_size), float("nan"))
        if learner is None:  # pure demonstrations
            executed, labels, intervention, proposals = a_exp.clone(), a_exp, torch.zeros(n, dtype=torch.bool), None
        elif gate_threshold is not None and a_exp is not None:  # HG-DAgger: the human takes over on large deviations
            dev = (a_pol - a_exp).abs().amax(dim=-1)
            gated = torch.where(gated, dev > release, dev > gate_threshold)
            executed = torch.where(gated[:, None], a_exp, a_pol)
            labels = torch.where(gated[:, None], a_exp, nan)
            intervention, proposals = gated.clone(), a_pol
        else:
            if mixing == "episode":
                use_expert = ep_expert.clone()
            else:
                use_expert = torch.rand(n, generator=gen) < beta
            if a_exp is None:
                executed, labels = a_pol, nan
                use_expert = torch.zeros(n, dtype=torch.bool)
            else:
                executed = torch.where(use_expert[:, None], a_exp, a_pol)
                labels = a_exp
            intervention, proposals = use_expert, a_pol
        if dart_noise > 0 and a_exp is not None:
            from_expert = intervention if learner is not None else torch.ones(n, dtype=torch.bool)
            noise = torch.randn(executed.shape, generator=gen) * dart_noise
            executed = torch.where(from_expert[:, None], (executed + noise).clamp(-1, 1), executed)
        state = env.sim.get_state() if recorder.with_states and hasattr(env, "sim") else None
        next_obs, reward, terminated, truncated, info = env.step(executed.to(env.device))
        recorder.record(obs, executed, reward, terminated, truncated, info, expert_actions=labels,
                        policy_actions=proposals, intervention=intervention, states=state, skip=finished >= quota)
        done = (terminated | truncated).cpu()
        finished += done.long()
        if mixing == "episode" and done.any():
            ep_expert[done] = torch.rand(int(done.sum()), generator=gen) < beta
        gated[done] = False
        obs = next_obs
        steps += n
    res = recorder.results[start:]
    succ = [r["success"] for r in res if r["success"] is not None]
    return {"episodes": len(res), "steps": sum(r["length"] for r in res), "labels": sum(r["labels"] for r in res),
            "interventions": sum(r["interventions"] for r in res), "env_steps": steps,
            "success_rate": float(np.mean(succ)) if succ else float("nan")}


def collect(task: str, expert_spec: str, episodes: int, out: str | Path, num_envs: int = 8, seed: int = 0,
            env_overrides: dict | None = None, dart_noise: float = 0.0, mode: str = "w",
            expert_obs_group: str | None = None, with_states: bool = True) -> dict:
    """``roboreal collect``: expert demonstrations into a dataset file."""
    from roboreal.agents.experts import make_expert
    from roboreal.envs import make

    env = make(task, num_envs=min(num_envs, episodes), seed=seed, **(env_overrides or {}))
    try:
        expert = make_expert(expert_spec, env, obs_group=expert_obs_group)
        meta = dataset_meta(env, task=task, env_overrides=env_overrides, source="sim", expert=expert.describe())
        t0 = time.perf_counter()
        with DatasetWriter(out, meta, mode=mode) as writer:
            rec = BatchedRecorder(writer, env.num_envs, max_episodes=episodes,
                                  episode_attrs={"source": "sim", "seed": seed, "round": 0, "beta": 1.0,
                                                 "dart_noise": dart_noise}, with_states=with_states)
            stats = rollout(env, expert, rec, episodes, dart_noise=dart_noise, seed=seed)
        stats["wall_time_s"] = time.perf_counter() - t0
        stats["out"] = str(out)
        return stats
    finally:
        env.close()


class DAgger:
    """The DAgger loop; `run()` returns the per-round history (also in ``progress.csv``)."""

    def __init__(self, task: str, expert: Expert | Callable[[Any], Expert] | None, cfg: DAggerConfig,
                 run_dir: str | Path, seed: int = 0, env_overrides: dict | None = None,
                 datasets: list[str | Path] | None = None, log=None, expert_name: str = ""):
        """`expert`: an `Expert`, a factory ``env -> Expert`` (called with the rollout env), or
        None (human data only: train on `datasets`)."""
        from roboreal.envs import make

        self.task = task
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.env_overrides = dict(env_overrides or {})
        self.datasets = [Path(d) for d in (datasets or [])]
        self.log = log or (lambda msg: None)
        if (self.run_dir / "checkpoints" / "best.pt").exists():
            raise ConfigError("run_dir", f"{self.run_dir} already holds a run; choose another --run-dir")
        if expert is None and not self.datasets:
            raise ConfigError("expert", "give an expert (scripted, a run, a bundle) or --dataset files with human labels")
        if expert is None:  # human labels only: refuse files without any before a run directory is made
            require_labels(self.datasets, cfg.bc.labels)
        self.env = make(task, num_envs=cfg.num_envs, seed=seed, **self.env_overrides)
        self.image_inputs = resolve_image_inputs(cfg.bc.images, list(self.env.spec.image_shapes), where=f"task {task}")
        self.expert = expert if (expert is None or isinstance(expert, Expert)) else expert(self.env)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_path = self.run_dir / "data.hdf5"
        self.writer = DatasetWriter(self.data_path, dataset_meta(
            self.env, task=task, env_overrides=self.env_overrides, source="sim",
            expert=self.expert.describe() if self.expert is not None else {"kind": "human"}, algo="dagger"))
        self.recorder = BatchedRecorder(self.writer, self.env.num_envs, with_states=True)
        for d in self.datasets:
            with DatasetReader(d) as r:
                check_compatible(dict(r.meta), self.env, cfg.bc.obs_group)
        self.config = {"task": task, "algo": "dagger", "seed": seed, "num_envs": cfg.num_envs, "device": "cpu",
                       "total_steps": 0, "env": self.env_overrides, "algorithm": to_dict(cfg),
                       "expert": expert_name or (self.expert.describe() if self.expert is not None else "human"),
                       "datasets": [str(d) for d in self.datasets]}
        write_run_config(self.run_dir, self.config)
        self.history: list[dict] = []
        self.env_steps = 0
        self.policy = None
        self.trainer = None

    def _training_data(self) -> tuple[TransitionSet, TransitionSet | None]:
        """Everything collected so far plus the given datasets, split by episode (labels decided per
        file, so train + validation labels equal ``roboreal data info``'s counts)."""
        from roboreal.data import load_transitions

        files = [self.data_path] if self.recorder.written else []
        files += self.datasets
        train, val, _ = load_transitions(files, self.cfg.bc.val_fraction, self.seed, self.cfg.bc.labels)
        return train, val

    def _train_and_evaluate(self, round_i: int, beta: float, collected: dict) -> dict:
        t0 = time.perf_counter()
        train, val = self._training_data()
        val_labels = val.num_labels if val else 0
        labels = train.num_labels + val_labels
        if self.cfg.warm_start and self.trainer is not None:
            trainer = self.trainer
            result = trainer.fit(train, val, fit_normalizer=False, max_epochs=self.cfg.warm_start_epochs)
        else:
            trainer, result = train_bc(train, val, self.cfg.bc, seed=self.seed + round_i, image_inputs=self.image_inputs)
        self.trainer = trainer
        self.policy = trainer.policy()
        state = trainer.policy_state(self.cfg.bc.obs_group)
        score = {}
        if self.cfg.eval_episodes > 0:
            score = evaluate_policy(self.policy, self.task, self.env_overrides, self.cfg.eval_episodes,
                                    self.cfg.eval_seed, self.cfg.bc.obs_group)
        row = {"round": round_i, "beta": round(beta, 4), "episodes": self.recorder.written,
               "labels": labels, "train_labels": train.num_labels, "val_labels": val_labels,
               "new_labels": collected.get("labels", 0),
               "interventions": collected.get("interventions", 0),
               "rollout_success": collected.get("success_rate", float("nan")),
               "train_episodes": train.num_episodes, "val_loss": round(result["best_loss"], 6),
               "epochs": result["epochs"], "success_rate": score.get("success_rate", float("nan")),
               "mean_return": score.get("mean_return", float("nan")), "env_steps": self.env_steps,
               "time_s": round(time.perf_counter() - t0, 2)}
        if "velocity_tracking_error" in score:
            row["velocity_tracking_error"] = round(score["velocity_tracking_error"], 4)
        self.history.append(row)
        meta = run_meta(self.task, "dagger", self.env_overrides, self.seed, float(self.env.spec.control_dt),
                        labels, iteration=round_i, num_envs=self.cfg.num_envs, labels=labels,
                        env_steps=self.env_steps, round=round_i)
        ck = self.run_dir / "checkpoints"
        save_checkpoint(ck / f"round_{round_i:03d}.pt", state, meta, self.config)
        save_checkpoint(ck / "last.pt", state, meta, self.config)
        best = max((_merit(r) for r in self.history[:-1] if not math.isnan(_merit(r))), default=-math.inf)
        if len(self.history) == 1 or math.isnan(_merit(row)) or _merit(row) >= best:
            save_checkpoint(ck / "best.pt", state, meta, self.config)
        write_progress_csv(self.history, self.run_dir / "progress.csv")
        self.log(row)
        return row

    def run(self) -> list[dict]:
        cfg = self.cfg
        try:
            # round 0: expert demonstrations (and/or the given datasets)
            collected: dict = {}
            if cfg.initial_episodes > 0 and self.expert is not None:
                collected = self._collect(0, 1.0, cfg.initial_episodes, learner=None)
            self._train_and_evaluate(0, 1.0, collected)
            for i in range(1, cfg.rounds + 1):
                if self.expert is None:
                    break  # human data only: the robot collects the next round with this policy
                beta = beta_for_round(cfg, i)
                collected = self._collect(i, beta, cfg.episodes_per_round, learner=self.policy)
                self._train_and_evaluate(i, beta, collected)
        finally:
            self.writer.close()
            self.env.close()
        last = self.history[-1]
        best = max(self.history, key=lambda r: (-math.inf if math.isnan(_merit(r)) else _merit(r)))
        write_metrics(self.run_dir, {"task": self.task, "algo": "dagger", "seed": self.seed, "rounds": len(self.history),
                                     "labels": last["labels"], "success_rate": last["success_rate"],
                                     "best_success_rate": best["success_rate"], "best_round": best["round"],
                                     "env_steps": self.env_steps, "history": self.history})
        plot_curves(self.run_dir, self.history, "labels", ["success_rate", "rollout_success"],
                    f"{self.task} / dagger: success vs expert labels")
        return self.history

    def _collect(self, round_i: int, beta: float, episodes: int, learner) -> dict:
        cfg = self.cfg
        self.recorder.episode_attrs = {"source": "sim", "round": round_i, "beta": beta,
                                       "seed": self.seed + 7919 * round_i}
        stats = rollout(self.env, self.expert, self.recorder, episodes, learner=learner,
                        learner_group=cfg.bc.obs_group, beta=beta, mixing=cfg.mixing,
                        gate_threshold=cfg.gate_threshold if learner is not None else None,
                        gate_release=cfg.gate_release, dart_noise=cfg.dart_noise, seed=self.seed + 7919 * round_i)
        self.env_steps += stats["env_steps"]
        return stats


def _merit(row: dict) -> float:
    """What "best round" means: the success rate, or the return on tasks without success."""
    return row["success_rate"] if not math.isnan(row["success_rate"]) else row["mean_return"]

