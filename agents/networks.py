"""Networks shared by the agents: MLPs, Gaussian actors, critics and Q networks.

- `GaussianActor` (PPO): state-dependent mean, state-independent *learned* log-std
  (Schulman et al. 2017; rsl_rl). Actions are sampled unbounded; the env clips to [-1, 1].
- `TanhGaussianActor` (SAC): state-dependent mean and log-std, sample ``u ~ N``,
  action ``a = tanh(u)`` with the change-of-variables log-prob correction
  ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2)`` (Haarnoja et al. 2018, appendix C),
  computed in the stable form ``2 (log 2 - u - softplus(-2u))``.
- `ValueCritic`, `QCritic` (Q(s, a)), `QNetwork` (Q(s, .) over discrete actions), and
  `polyak_update` for their target copies (SAC, DQN, IQL).
- `BatchRenorm` (Ioffe 2017) and the CrossQ variants that use it (Bhatt et al. 2024):
  `brn_mlp`, `BRNTanhGaussianActor`, `BRNQCritic` (a BatchRenorm layer on the input and
  after every hidden activation).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.distributions import Normal

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


def mlp(in_size: int, hidden: list[int] | tuple[int, ...], out_size: int, activation: str = "elu") -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` (no activation on the output)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r} (available: {', '.join(ACTIVATIONS)})")
    layers: list[nn.Module] = []
    last = in_size
    for h in hidden:
        layers += [nn.Linear(last, h), ACTIVATIONS[activation]()]
        last = h
    layers.append(nn.Linear(last, out_size))
    return nn.Sequential(*layers)


def mlp_trunk(in_size: int, hidden: list[int] | tuple[int, ...], activation: str = "relu") -> nn.Sequential:
    """``Linear -> act`` for every hidden size (a feature extractor; output size ``hidden[-1]``)."""
    net = mlp(in_size, list(hidden[:-1]), hidden[-1], activation)
    net.append(ACTIVATIONS[activation]())
    return net


def orthogonal_init(net: nn.Sequential, hidden_gain: float = math.sqrt(2), out_gain: float = 1.0) -> nn.Sequential:
    """Orthogonal weights, zero biases; a small output gain for the policy head (Andrychowicz et al. 2021)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, out_gain if i == len(linears) - 1 else hidden_gain)
        nn.init.zeros_(layer.bias)
    return net


def adam(params, lr: float, **kwargs) -> torch.optim.Adam:
    """Adam, fused where the build supports it (several times less overhead for small networks on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


class GaussianActor(nn.Module):
    """Diagonal Gaussian policy with a learned, state-independent log standard deviation."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "elu",
                 init_std: float = 1.0):
        super().__init__()
        self.mean_net = orthogonal_init(mlp(obs_size, hidden, action_size, activation), out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.mean_net(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action (the mean)."""
        return self.mean_net(obs)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def tanh_log_prob_correction(u: torch.Tensor) -> torch.Tensor:
    """``sum_i log(1 - tanh(u_i)^2)`` in the numerically stable form (no log of ~0)."""
    return (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)


class TanhGaussianActor(nn.Module):
    """SAC policy: ``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``; actions in (-1, 1)."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "relu"):
        super().__init__()
        self.trunk = mlp_trunk(obs_size, hidden, activation)
        self.mean = nn.Linear(hidden[-1], action_size)
        self.log_std = nn.Linear(hidden[-1], action_size)

    def mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        # Bounded log-std (soft clamp into [LOG_STD_MIN, LOG_STD_MAX], as in CleanRL / SpinningUp).
        log_std = torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        return self.mean(h), log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample ``a`` and its log-probability ``log pi(a|s)`` (with the tanh correction)."""
        mean, log_std = self.mean_log_std(obs)
        dist = Normal(mean, log_std.exp())
        u = dist.rsample()
        log_prob = dist.log_prob(u).sum(-1) - tanh_log_prob_correction(u)
        return torch.tanh(u), log_prob

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action ``tanh(mu(s))``."""
        return torch.tanh(self.mean_log_std(obs)[0])


class ValueCritic(nn.Module):
    def __init__(self, obs_size: int, hidden: list[int], activation: str = "elu"):
        super().__init__()
        self.net = orthogonal_init(mlp(obs_size, hidden, 1, activation), out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class QCritic(nn.Module):
    """Q(s, a) for continuous actions."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "relu"):
        super().__init__()
        self.net = mlp(obs_size + action_size, hidden, 1, activation)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * online`` (``tau = 1``: a hard copy)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


class QNetwork(nn.Module):
    """Q(s, .) over `num_actions` discrete actions (DQN)."""

    def __init__(self, obs_size: int, num_actions: int, hidden: list[int], activation: str = "relu"):
        super().__init__()
        self.net = mlp(obs_size, hidden, num_actions, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class BatchRenorm(nn.Module):
    """Batch Renormalization (Ioffe 2017) of ``(B, num_features)`` inputs.

    Train mode, with batch statistics ``mu_B``, ``sigma_B = sqrt(var_B + eps)`` (biased
    variance) and running statistics ``mu``, ``sigma = sqrt(running_var + eps)``::

        r = clip(sigma_B / sigma, 1 / r_max, r_max)        (no gradient)
        d = clip((mu_B - mu) / sigma, -d_max, d_max)       (no gradient)
        y = weight * ((x - mu_B) / sigma_B * r + d) + bias

    then ``running <- momentum * running + (1 - momentum) * batch`` for the mean and the
    variance (``momentum`` is the decay, 0.99 in CrossQ). With ``r = 1, d = 0`` this is
    plain BatchNorm; unclipped it equals normalizing with the running statistics while the
    gradient still flows through the batch statistics.

    Warm-up (the running statistics are meaningless at first): over the first
    ``warmup_steps`` train-mode forward passes the clip limits are ``r_max = 1, d_max = 0``
    (plain BatchNorm). ``warmup="switch"`` then jumps to the full limits (CrossQ);
    ``"ramp"`` relaxes them linearly from (1, 0) to (r_max, d_max) (the schedule of Ioffe's
    paper). The step counter is a buffer, so it is checkpointed with the statistics.

    Eval mode normalizes with the running statistics only: a fixed affine map, so an
    exported policy acts on one observation at a time.
    """

    def __init__(self, num_features: int, momentum: float = 0.99, eps: float = 1e-3, r_max: float = 3.0,
                 d_max: float = 5.0, warmup_steps: int = 100_000,
                 warmup: Literal["switch", "ramp"] = "switch"):
        super().__init__()
        if warmup not in ("switch", "ramp"):
            raise ValueError(f"warmup must be 'switch' or 'ramp', got {warmup!r}")
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.r_max = float(r_max)
        self.d_max = float(d_max)
        self.warmup_steps = int(warmup_steps)
        self.warmup = warmup
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # train-mode forward passes

    def renorm_limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(r_max, d_max)`` in force now, as tensors (no host sync on an accelerator)."""
        if self.warmup_steps <= 0:
            progress = torch.ones((), device=self.steps.device)
        elif self.warmup == "switch":
            progress = (self.steps >= self.warmup_steps).float()
        else:
            progress = (self.steps.float() / self.warmup_steps).clamp(max=1.0)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return (x - self.running_mean) * torch.rsqrt(self.running_var + self.eps) * self.weight + self.bias
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        batch_std = torch.sqrt(batch_var + self.eps)
        with torch.no_grad():
            running_std = torch.sqrt(self.running_var + self.eps)
            r_max, d_max = self.renorm_limits()
            r = torch.clamp(batch_std / running_std, 1.0 / r_max, r_max)
            d = torch.clamp((batch_mean - self.running_mean) / running_std, -d_max, d_max)
            # running statistics after r and d used the previous ones (Ioffe 2017, Algorithm 1)
            self.running_mean.lerp_(batch_mean, 1.0 - self.momentum)
            self.running_var.lerp_(batch_var, 1.0 - self.momentum)
            self.steps += 1
        x_hat = (x - batch_mean) / batch_std * r + d
        return x_hat * self.weight + self.bias

    def extra_repr(self) -> str:
        return (f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, r_max={self.r_max}, "
                f"d_max={self.d_max}, warmup_steps={self.warmup_steps}, warmup={self.warmup}")


def brn_mlp(in_size: int, hidden: list[int] | tuple[int, ...], out_size: int | None, activation: str = "relu",
            norm: dict | None = None) -> nn.Sequential:
    """``BRN -> [Linear -> act -> BRN] * len(hidden) -> Linear`` (CrossQ's critic; no output layer
    when ``out_size`` is None, a trunk). ``norm``: `BatchRenorm` keyword arguments."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r} (available: {', '.join(ACTIVATIONS)})")
    norm = norm or {}
    layers: list[nn.Module] = [BatchRenorm(in_size, **norm)]
    last = in_size
    for h in hidden:
        layers += [nn.Linear(last, h), ACTIVATIONS[activation](), BatchRenorm(h, **norm)]
        last = h
    if out_size is not None:
        layers.append(nn.Linear(last, out_size))
    return nn.Sequential(*layers)


class BRNTanhGaussianActor(TanhGaussianActor):
    """`TanhGaussianActor` whose trunk normalizes its input and every hidden layer with `BatchRenorm`.

    Train mode (policy updates) uses batch statistics; act and export in eval mode."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "relu",
                 norm: dict | None = None):
        nn.Module.__init__(self)  # the parent's layers, with a BatchRenorm trunk
        self.trunk = brn_mlp(obs_size, hidden, None, activation, norm)
        self.mean = nn.Linear(hidden[-1], action_size)
        self.log_std = nn.Linear(hidden[-1], action_size)


class BRNQCritic(QCritic):
    """Q(s, a) with `BatchRenorm` on the input ``concat(s, a)`` and after every hidden activation."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "relu",
                 norm: dict | None = None):
        nn.Module.__init__(self)  # the parent's forward, with a BatchRenorm network
        self.net = brn_mlp(obs_size + action_size, hidden, 1, activation, norm)
