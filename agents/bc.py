"""Behaviour cloning (BC) and goal-conditioned BC with hindsight relabeling.

Supervised learning of ``pi(s) -> a`` from expert-labelled steps (Pomerleau 1989;
Ross et al. 2011 call it "supervised" imitation). The details, in order:

1. Data: a `TransitionSet` (all steps of the training episodes; only steps with an expert
   label are trained on, so HG-DAgger data where only takeovers carry labels fits).
   Train/validation are split *by episode* (`roboreal.data.load_transitions`):
   steps of one episode are strongly correlated, a per-step split would leak.
2. Observation normalization: a `RunningNormalizer` fitted once to the training inputs
   (mean/var over all of them), saved inside the policy like PPO/SAC's, so the exported
   module takes raw observations.
3. Policy: the shared `GaussianActor` MLP (`roboreal.agents.networks`).
   ``policy="deterministic"``: mean squared error on the mean (the learned std is unused);
   ``policy="gaussian"``: negative log-likelihood of the expert action under
   ``N(mu(s), sigma)`` with a learned state-independent sigma. Either way the
   deployed/evaluated policy is the mean, clamped to [-1, 1]; the checkpoint's ``policy``
   entry is PPO's ``"gaussian"`` kind, so `load_policy`, ``roboreal play`` and
   ``roboreal export`` take BC runs unchanged.
4. Goal-conditioned BC with hindsight relabeling (Ghosh et al. 2019 "GCSL"; Lynch et al.
   2019; Andrychowicz et al. 2017's "future" strategy): with probability
   ``relabel_fraction`` a sample's desired goal is replaced by a goal the *same
   demonstration* achieved later (``future``: the achieved goal after a uniformly drawn
   step ``t' in [t, T-1]``; ``final``: after its last step). The action is kept: it was
   on the way to that goal. Relabels are redrawn for every minibatch. The policy input is
   then ``cat(observation, goal)`` -- the env's ``policy`` group for goal tasks.
5. Adam, minibatches drawn uniformly from the labelled steps; an "epoch" is
   ``updates_per_epoch`` updates (robomimic's convention: comparable across dataset sizes).
6. Early stopping on the validation loss (no relabeling, the demonstrations' own goals):
   the best-validation weights are kept; training stops after ``patience`` epochs
   without improvement. Without validation episodes the training loss is used.
7. From pixels (``images``, default ``auto``: the task's cameras, i.e. the dataset's image
   groups): the policy is `roboreal.agents.vision.ImageGaussianActor` (a conv encoder per
   camera beside the normalized vector group), its checkpoint kind ``gaussian_image`` with
   the cameras in ``image_inputs``; training batches get DrQ's random shift
   (``shift_pad`` pixels, 0: off), validation and the deployed policy see the images as they are.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from roboreal.agents.checkpoints import CHECKPOINT_FORMAT, atomic_save
from roboreal.agents.networks import GaussianActor, adam
from roboreal.agents.normalizer import make_normalizer
from roboreal.agents.vision import ImageEncoderCfg, image_policy_state, resolve_image_inputs
from roboreal.agents.run_config import write_run_config
from roboreal.agents.run_logs import write_progress_csv
from roboreal.config import ConfigError, to_dict
from roboreal.data import TransitionSet


@dataclass
class BCConfig(ImageEncoderCfg):
    policy: Literal["deterministic", "gaussian"] = "deterministic"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "elu"
    normalize_obs: bool = True
    obs_clip: float = 10.0
    learning_rate: float = 1e-3
    # "cosine": each fit decays the learning rate from learning_rate to lr_final_fraction of it
    # over its max_epochs (a DAgger round's fit restarts it: warm restarts); "constant": no decay
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final_fraction: float = 0.05
    weight_decay: float = 0.0
    # > 0: an exponential moving average of the weights (this decay per update) is what is
    # validated, kept as the best and exported; training continues from the raw weights
    ema_decay: float = 0.0
    batch_size: int = 256
    updates_per_epoch: int = 100
    max_epochs: int = 60
    patience: int = 10  # epochs without a better validation loss before stopping
    min_delta: float = 0.0  # an improvement smaller than this does not count
    max_grad_norm: float = 1.0
    init_std: float = 0.5  # gaussian policy: initial std of the learned log-std
    val_fraction: float = 0.1  # episodes held out for validation (early stopping)
    relabel_fraction: float = 0.0  # goal tasks: share of samples whose goal is relabeled (0 = plain BC)
    relabel_strategy: Literal["future", "final"] = "future"
    obs_group: str = "policy"
    # which steps are labels (roboreal.data.label_source, decided per file): "auto" = finite
    # expert_actions, or in a file with none the actions of steps no policy ran; "executed" = every executed
    # action, the policy's own included (an explicit choice; DAgger refuses it)
    labels: Literal["auto", "expert", "executed"] = "auto"
    # camera images: "auto" = the task's image observations (every image group of the data),
    # "none" = the vector group only, or camera names "front,wrist" (call order of the policy)
    # (the encoder keys, encoder_channels ... shift_pad: `ImageEncoderCfg`)
    images: str = "auto"
    # From pixels, a privileged auxiliary target: the image features also predict this
    # observation group (e.g. "critic", which holds the object's pose) through a linear head
    # used in training only, weighted by aux_weight (0: off). The deployed policy never reads it.
    aux_group: str = "critic"
    aux_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.relabel_fraction <= 1.0:
            raise ConfigError("relabel_fraction", f"must be in [0, 1], got {self.relabel_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        for name in ("batch_size", "updates_per_epoch", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.hidden:
            raise ConfigError("hidden", "needs at least one layer")
        if not 0.0 <= self.lr_final_fraction <= 1.0:
            raise ConfigError("lr_final_fraction", f"must be in [0, 1], got {self.lr_final_fraction}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError("lr_schedule", f"must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.aux_weight < 0:
            raise ConfigError("aux_weight", f"must be >= 0, got {self.aux_weight}")
        self.check_encoder_fields()


GOAL_GROUPS = ("observation", "achieved_goal", "desired_goal")


def is_goal_data(ts: TransitionSet, obs_group: str = "policy") -> bool:
    """Goal-task data: ``policy == cat(observation, desired_goal)`` and achieved goals are known."""
    if obs_group != "policy" or not all(g in ts.obs for g in GOAL_GROUPS) or ts.next_achieved is None:
        return False
    if "policy" not in ts.obs:
        return True
    k = ts.obs["observation"].shape[1] + ts.obs["desired_goal"].shape[1]
    return ts.obs["policy"].shape[1] == k


def relabel_goals(ts: TransitionSet, idx: torch.Tensor, fraction: float, strategy: str = "future",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Goals for samples `idx`: the desired goal, or (with probability `fraction`) a goal the
    same episode achieved at or after that step. Returns ``(goals, relabeled_mask)``."""
    goals = ts.obs["desired_goal"][idx].clone()
    if fraction <= 0.0 or len(idx) == 0:
        return goals, torch.zeros(len(idx), dtype=torch.bool)
    pick = torch.rand(len(idx), generator=generator) < fraction
    end = ts.episode_end[idx]
    if strategy == "future":
        span = (end - idx).clamp_min(1)  # steps t..T-1 of the episode
        future = idx + (torch.rand(len(idx), generator=generator) * span).long().clamp_max(span - 1)
    elif strategy == "final":
        future = end - 1
    else:
        raise ConfigError("relabel_strategy", f"must be 'future' or 'final', not {strategy!r}")
    goals[pick] = ts.next_achieved[future[pick]]
    return goals, pick


def policy_inputs(ts: TransitionSet, idx: torch.Tensor, obs_group: str, goals: torch.Tensor | None = None) -> torch.Tensor:
    if goals is not None:
        return torch.cat([ts.obs["observation"][idx], goals], dim=-1)
    if obs_group not in ts.obs:
        raise ConfigError("obs_group", f"the dataset has no observation group {obs_group!r} (has {sorted(ts.obs)})")
    return ts.obs[obs_group][idx]


class BCTrainer:
    """Fits a policy to a `TransitionSet`; `fit` returns the best-validation result."""

    def __init__(self, obs_size: int, action_size: int, cfg: BCConfig, seed: int = 0, device: str = "cpu",
                 image_shapes: list[tuple[str, tuple[int, int, int]]] | None = None):
        """`image_shapes`: ``[(camera, (C, H, W)), ...]`` the policy reads besides the vector
        group (None or empty: the vector group only)."""
        self.cfg = cfg
        self.obs_size = int(obs_size)
        self.action_size = int(action_size)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.image_shapes = [(str(c), tuple(int(v) for v in shape)) for c, shape in (image_shapes or [])]
        self.image_inputs = [c for c, _ in self.image_shapes]
        if self.image_shapes:
            from roboreal.agents.vision import ImageGaussianActor

            self.actor = ImageGaussianActor(obs_size, action_size, list(cfg.hidden), cfg.activation,
                                            self.image_shapes, cfg.encoder(), init_std=cfg.init_std)
        else:
            self.actor = GaussianActor(obs_size, action_size, list(cfg.hidden), cfg.activation, init_std=cfg.init_std)
        self.normalizer = make_normalizer(obs_size, cfg.normalize_obs, cfg.obs_clip)
        self.actor.to(self.device)
        self.normalizer.to(self.device)
        if cfg.policy == "gaussian":
            params = list(self.actor.parameters())
        elif self.image_shapes:  # everything but the unused log-std
            params = [p for name, p in self.actor.named_parameters() if name != "log_std"]
        else:
            params = list(self.actor.mean_net.parameters())
        self.params = params
        self.optimizer = adam(params, cfg.learning_rate, weight_decay=cfg.weight_decay) if cfg.weight_decay else \
            adam(params, cfg.learning_rate)
        self.updates = 0
        self.aux_head: torch.nn.Linear | None = None  # made at the first fit (the target's size is the data's)
        self.ema: dict[str, torch.Tensor] | None = None  # the averaged weights (`BCConfig.ema_decay`)
        self.aux_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def _setup_aux(self, ts: TransitionSet) -> None:
        """The auxiliary head and its target statistics (see `BCConfig.aux_group`)."""
        cfg = self.cfg
        if not (self.image_shapes and cfg.aux_weight > 0) or self.aux_head is not None:
            return
        if cfg.aux_group not in ts.obs:
            raise ConfigError("aux_group", f"the dataset has no observation group {cfg.aux_group!r} "
                                           f"(has {sorted(ts.obs)})")
        target = ts.obs[cfg.aux_group].float()
        self.aux_stats = (target.mean(0).to(self.device), target.std(0).clamp_min(1e-3).to(self.device))
        self.aux_head = torch.nn.Linear(self.actor.features, target.shape[1]).to(self.device)
        self.optimizer.add_param_group({"params": list(self.aux_head.parameters())})
        self.params = self.params + list(self.aux_head.parameters())

    def loss(self, x: torch.Tensor, y: torch.Tensor, images: list[torch.Tensor] | None = None,
             aux_target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(training loss, mean squared error) on raw inputs `x` (+ uint8 `images` of
        `image_inputs`) and expert actions `y`; with `aux_target` (the raw `aux_group` values)
        the training loss includes the weighted auxiliary prediction error."""
        z = self.normalizer(x)
        if self.image_shapes:
            features = self.actor.encode(*images)
            mean = self.actor.act_from_features(z, features)
        else:
            mean = self.actor.mean_net(z)
        mse = (mean - y).square().sum(-1).mean()
        if aux_target is not None and self.aux_head is not None:
            mu, sigma = self.aux_stats
            aux = (self.aux_head(features) - (aux_target.to(self.device) - mu) / sigma).square().mean()
            loss, _ = self._action_loss(mean, y, mse)
            return loss + self.cfg.aux_weight * aux, mse
        return self._action_loss(mean, y, mse)

    def _action_loss(self, mean: torch.Tensor, y: torch.Tensor, mse: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.policy == "gaussian":
            std = self.actor.log_std.exp().expand_as(mean)
            nll = -torch.distributions.Normal(mean, std).log_prob(y).sum(-1).mean()
            return nll, mse
        return mse, mse

    def _inputs(self, ts: TransitionSet, idx: torch.Tensor, relabel: bool) -> torch.Tensor:
        goal_data = is_goal_data(ts, self.cfg.obs_group)
        if goal_data and relabel and self.cfg.relabel_fraction > 0:
            goals, _ = relabel_goals(ts, idx, self.cfg.relabel_fraction, self.cfg.relabel_strategy, self.generator)
            return policy_inputs(ts, idx, self.cfg.obs_group, goals)
        return policy_inputs(ts, idx, self.cfg.obs_group)

    def _images(self, ts: TransitionSet, idx: torch.Tensor, augment: bool) -> list[torch.Tensor]:
        """The uint8 images of samples `idx` (random-shifted when `augment`), on the device."""
        from roboreal.agents.vision import random_shift

        out = []
        for camera, shape in self.image_shapes:
            if camera not in ts.obs:
                raise ConfigError("images", f"the dataset has no camera image {camera!r} (has {sorted(ts.obs)})")
            image = ts.obs[camera][idx]
            if tuple(image.shape[1:]) != shape:
                raise ConfigError("images", f"camera {camera!r}: the dataset's images are {tuple(image.shape[1:])}, "
                                            f"the policy takes {shape}")
            if augment and self.cfg.shift_pad > 0:
                image = random_shift(image, self.cfg.shift_pad, self.generator)
            out.append(image.to(self.device))
        return out

    @torch.no_grad()
    def evaluate_loss(self, ts: TransitionSet | None) -> tuple[float, float]:
        if ts is None or ts.num_labels == 0:
            return float("nan"), float("nan")
        idx = ts.labeled.nonzero().squeeze(-1)
        if self.image_shapes:  # in chunks: conv activations of every validation step at once are large
            total_loss, total_mse = 0.0, 0.0
            for chunk in idx.split(1024):
                x = self._inputs(ts, chunk, relabel=False).to(self.device)
                loss, mse = self.loss(x, ts.labels[chunk].to(self.device), self._images(ts, chunk, augment=False))
                total_loss += float(loss) * len(chunk)
                total_mse += float(mse) * len(chunk)
            return total_loss / len(idx), total_mse / len(idx)
        x = self._inputs(ts, idx, relabel=False).to(self.device)
        y = ts.labels[idx].to(self.device)
        loss, mse = self.loss(x, y)
        return float(loss), float(mse)

    def fit_normalizer(self, ts: TransitionSet) -> None:
        idx = ts.labeled.nonzero().squeeze(-1)
        x = self._inputs(ts, idx, relabel=False)
        self.normalizer.update(x.to(self.device))
        if is_goal_data(ts, self.cfg.obs_group) and self.cfg.relabel_fraction > 0:
            # relabeled inputs carry achieved goals: include them in the statistics
            self.normalizer.update(policy_inputs(ts, idx, self.cfg.obs_group, ts.next_achieved[idx]).to(self.device))

    def fit(self, train: TransitionSet, val: TransitionSet | None = None, log=None, fit_normalizer: bool = True,
            max_epochs: int | None = None) -> dict:
        """Train on `train`'s labelled steps; early-stop on `val`; keep the best weights.

        A second call continues from the current weights (DAgger's warm start); pass
        ``fit_normalizer=False`` there to keep the input statistics the weights were trained with.
        """
        cfg = self.cfg
        max_epochs = max_epochs or cfg.max_epochs
        idx_all = train.labeled.nonzero().squeeze(-1)
        if len(idx_all) == 0:
            raise ConfigError("dataset", "no expert-labelled steps to learn from")
        if fit_normalizer:
            self.fit_normalizer(train)
        self._setup_aux(train)
        use_val = val is not None and val.num_labels > 0
        best = math.inf
        best_state = None
        best_epoch = 0
        history = []
        bad = 0
        t0 = time.perf_counter()
        total_updates = max_epochs * cfg.updates_per_epoch
        for epoch in range(1, max_epochs + 1):
            self.actor.train()
            total = 0.0
            for step in range(cfg.updates_per_epoch):
                self._set_learning_rate(((epoch - 1) * cfg.updates_per_epoch + step) / total_updates)
                pick = torch.randint(0, len(idx_all), (min(cfg.batch_size, len(idx_all)),), generator=self.generator)
                idx = idx_all[pick]
                x = self._inputs(train, idx, relabel=True).to(self.device)
                y = train.labels[idx].to(self.device)
                aux = train.obs[cfg.aux_group][idx] if self.aux_head is not None else None
                loss, _ = self.loss(x, y, self._images(train, idx, augment=True) if self.image_shapes else None, aux)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.updates += 1
                self._update_ema()
                total += float(loss.detach())
            self.actor.eval()
            train_loss = total / cfg.updates_per_epoch
            raw = self._swap_in_ema()  # validate (and keep) the averaged weights
            val_loss, val_mse = self.evaluate_loss(val) if use_val else (float("nan"), float("nan"))
            score = val_loss if use_val else train_loss
            row = {"epoch": epoch, "updates": self.updates, "train_loss": round(train_loss, 6),
                   "val_loss": round(val_loss, 6), "val_mse": round(val_mse, 6),
                   "time_s": round(time.perf_counter() - t0, 3)}
            history.append(row)
            if log is not None:
                log(row)
            if score < best - cfg.min_delta:
                best, best_epoch, bad = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.actor.state_dict().items()}
            else:
                bad += 1
            if raw is not None:
                self.actor.load_state_dict(raw)  # training goes on from the raw weights
            if bad >= cfg.patience:
                break
        self._set_learning_rate(0.0)  # a later optimizer step (none in BC itself) sees the base rate
        if best_state is not None:
            self.actor.load_state_dict(best_state)
        return {"best_epoch": best_epoch, "best_loss": best, "epochs": len(history), "updates": self.updates,
                "history": history, "labels": int(len(idx_all)), "stopped_early": len(history) < max_epochs,
                "validation": use_val, "wall_time_s": time.perf_counter() - t0}

    def _update_ema(self) -> None:
        decay = self.cfg.ema_decay
        if decay <= 0:
            return
        state = self.actor.state_dict()
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in state.items()}
            return
        for k, v in state.items():
            if v.dtype.is_floating_point:
                self.ema[k].lerp_(v.detach(), 1.0 - decay)
            else:
                self.ema[k].copy_(v)

    def _swap_in_ema(self) -> dict[str, torch.Tensor] | None:
        """Load the averaged weights; the raw ones returned (None without averaging)."""
        if self.ema is None:
            return None
        raw = {k: v.detach().clone() for k, v in self.actor.state_dict().items()}
        self.actor.load_state_dict(self.ema)
        return raw

    def _set_learning_rate(self, progress: float) -> None:
        """The learning rate at `progress` (0..1) through a fit, by `BCConfig.lr_schedule`."""
        cfg = self.cfg
        if cfg.lr_schedule == "constant":
            return
        floor = cfg.lr_final_fraction
        lr = cfg.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def policy_state(self, obs_group: str = "policy") -> dict:
        """The runner's ``policy`` checkpoint entry (PPO's ``gaussian`` kind: mean, clamped; from
        pixels the ``gaussian_image`` kind, its cameras in ``image_inputs``)."""
        cfg = self.cfg
        state = {"kind": "gaussian", "obs_group": obs_group, "obs_size": self.obs_size,
                 "action_size": self.action_size, "action_type": "continuous",
                 "args": {"hidden": list(cfg.hidden), "activation": cfg.activation, "normalize_obs": cfg.normalize_obs,
                          "obs_clip": cfg.obs_clip},
                 "actor": {k: v.detach().cpu().clone() for k, v in self.actor.state_dict().items()},
                 "normalizer": {k: v.detach().cpu().clone() for k, v in self.normalizer.state_dict().items()}}
        return image_policy_state(state, self.image_shapes, cfg.encoder()) if self.image_shapes else state

    def policy(self):
        from roboreal.agents.policy import build_policy

        return build_policy(self.policy_state(self.cfg.obs_group))


def dataset_image_shapes(ts: TransitionSet, cameras: list[str]) -> list[tuple[str, tuple[int, int, int]]]:
    """``[(camera, (C, H, W)), ...]`` of `cameras` in `ts` (refuses a camera it lacks)."""
    from roboreal.agents.vision import image_groups

    have = image_groups(ts.obs)
    missing = [c for c in cameras if c not in have]
    if missing:
        raise ConfigError("images", f"the dataset has no camera image {missing[0]!r} (image groups: "
                                    f"{have or 'none'}); record it with the task's cameras, or images=none")
    return [(c, tuple(int(v) for v in ts.obs[c].shape[1:])) for c in cameras]


def train_bc(train: TransitionSet, val: TransitionSet | None, cfg: BCConfig, seed: int = 0, log=None,
             device: str = "cpu", image_inputs: list[str] | None = None) -> tuple[BCTrainer, dict]:
    """Fit a BC policy; returns the trainer (holding the best-validation weights) and the result.

    `image_inputs`: the cameras the policy reads (None: ``cfg.images`` against the data's image groups)."""
    from roboreal.agents.vision import image_groups

    if image_inputs is None:
        image_inputs = resolve_image_inputs(cfg.images, image_groups(train.obs))
    image_shapes = dataset_image_shapes(train, list(image_inputs))
    goal = is_goal_data(train, cfg.obs_group)
    if cfg.relabel_fraction > 0 and not goal:
        raise ConfigError("relabel_fraction", "goal relabeling needs goal-task data (observation, achieved_goal, "
                                              "desired_goal groups)")
    obs_size = (train.obs["observation"].shape[1] + train.obs["desired_goal"].shape[1]) if goal else \
        policy_inputs(train, torch.zeros(1, dtype=torch.long), cfg.obs_group).shape[1]
    trainer = BCTrainer(obs_size, train.labels.shape[1], cfg, seed=seed, device=device, image_shapes=image_shapes)
    result = trainer.fit(train, val, log=log)
    return trainer, result


# --------------------------------------------------------------------------------------
# Run directories (the runner's layout) and evaluation
# --------------------------------------------------------------------------------------


def save_checkpoint(path: Path, policy_state: dict, meta: dict, config: dict, extra: dict | None = None) -> None:
    """A checkpoint `load_policy` reads: ``format``, ``meta``, ``config``, ``policy`` (+ extras)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"format": CHECKPOINT_FORMAT, "meta": meta, "config": config, "policy": policy_state,
                 **(extra or {})}, path)


def run_meta(task: str, algo: str, env_overrides: dict, seed: int, control_dt: float | None, global_step: int,
             **extra) -> dict:
    return {"task": task, "algo": algo, "env": dict(env_overrides or {}), "seed": seed, "num_envs": extra.pop("num_envs", 1),
            "control_dt": control_dt, "global_step": int(global_step), "iteration": extra.pop("iteration", 0),
            "world_size": 1, "rank": 0, **extra}


def write_metrics(run_dir: Path, metrics: dict) -> None:
    with open(run_dir / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2, default=float)


def plot_curves(run_dir: Path, rows: list[dict], x: str, ys: list[str], title: str, name: str = "learning_curve.png"):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    plotted = False
    for y in ys:
        pts = [(r[x], r[y]) for r in rows if r.get(y) is not None and not (isinstance(r[y], float) and math.isnan(r[y]))]
        if pts:
            ax.plot(*zip(*pts), label=y, marker="o" if len(pts) < 20 else None)
            plotted = True
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / name, dpi=100)
    plt.close(fig)


@torch.no_grad()
def evaluate_policy(policy, task: str, env_overrides: dict | None = None, episodes: int = 64, seed: int = 12345,
                    obs_group: str = "policy") -> dict:
    """Deterministic success/return of `policy` on `episodes` fresh envs (one episode each)."""
    from roboreal.agents.policy import evaluate
    from roboreal.envs import make

    env = make(task, num_envs=episodes, seed=seed, **(env_overrides or {}))
    try:
        return evaluate(policy, env, obs_group=obs_group)
    finally:
        env.close()


def run_bc(datasets: list[str | Path], task: str | None, cfg: BCConfig, run_dir: str | Path, seed: int = 0,
           env_overrides: dict | None = None, eval_episodes: int = 64, eval_seed: int = 12345,
           log=None) -> dict:
    """``roboreal bc``: train on dataset files, write a run directory, evaluate (if the task runs here)."""
    from roboreal.data import check_compatible, load_transitions
    from roboreal.envs.registry import recorded_env_kwargs

    run_dir = Path(run_dir)
    if (run_dir / "checkpoints" / "best.pt").exists():
        raise ConfigError("run_dir", f"{run_dir} already holds a run; choose another --run-dir")
    train, val, meta = load_transitions(datasets, cfg.val_fraction, seed, cfg.labels)
    task = task or meta.get("task")
    if not task:
        raise ConfigError("task", "the dataset names no task; pass --task")
    env_overrides = {**recorded_env_kwargs(meta, task), **(env_overrides or {})}
    from roboreal.envs import make

    env = make(task, num_envs=1, seed=seed, **env_overrides)
    check_compatible(meta, env, cfg.obs_group)
    control_dt = float(env.spec.control_dt)
    if cfg.obs_group not in env.spec.observation_sizes:
        raise ConfigError("obs_group", f"task {task} has no observation group {cfg.obs_group!r}")
    image_inputs = resolve_image_inputs(cfg.images, list(env.spec.image_shapes), where=f"task {task}")
    for camera in image_inputs:
        rendered = tuple(env.spec.image_shapes[camera])
        recorded = tuple(train.obs[camera].shape[1:]) if camera in train.obs else rendered  # missing: train_bc says
        if recorded != rendered:
            raise ConfigError("images", f"camera {camera!r}: the dataset's images are {recorded}, task {task} "
                                        f"renders {rendered}")
    env.close()
    config = {"task": task, "algo": "bc", "seed": seed, "num_envs": 1, "device": "cpu", "total_steps": 0,
              "env": env_overrides, "algorithm": to_dict(cfg), "datasets": [str(d) for d in datasets],
              "dataset": {"train_episodes": train.num_episodes, "val_episodes": val.num_episodes if val else 0,
                          "train_labels": train.num_labels, "val_labels": val.num_labels if val else 0}}
    write_run_config(run_dir, config)
    trainer, result = train_bc(train, val, cfg, seed=seed, log=log, image_inputs=image_inputs)
    state = trainer.policy_state(cfg.obs_group)
    meta_ck = run_meta(task, "bc", env_overrides, seed, control_dt, train.num_labels, updates=result["updates"],
                       labels=train.num_labels, best_epoch=result["best_epoch"])
    save_checkpoint(run_dir / "checkpoints" / "best.pt", state, meta_ck, config)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", state, meta_ck, config)
    write_progress_csv(result["history"], run_dir / "progress.csv")
    plot_curves(run_dir, result["history"], "epoch", ["train_loss", "val_loss"], f"{task} / bc")
    scores = {}
    if eval_episodes > 0:
        scores = evaluate_policy(trainer.policy(), task, env_overrides, eval_episodes, eval_seed, cfg.obs_group)
    val_labels = val.num_labels if val else 0
    metrics = {"task": task, "algo": "bc", "seed": seed, "labels": train.num_labels + val_labels,
               "train_labels": train.num_labels, "val_labels": val_labels,
               "train_episodes": train.num_episodes, "val_episodes": val.num_episodes if val else 0,
               **({"image_inputs": list(image_inputs)} if image_inputs else {}),
               "epochs": result["epochs"], "best_epoch": result["best_epoch"], "best_val_loss": result["best_loss"],
               "updates": result["updates"], "wall_time_s": round(result["wall_time_s"], 2),
               "eval_episodes": eval_episodes if scores else 0,
               "success_rate": scores.get("success_rate"), "mean_return": scores.get("mean_return")}
    write_metrics(run_dir, metrics)
    return {**metrics, "run_dir": str(run_dir), "history": result["history"]}
