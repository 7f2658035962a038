"""Networks shared by the agents: MLPs, Gaussian actors, critics and Q networks.

- `GaussianActor` (PPO): state-dependent mean, state-independent *learned* log-std
  (Schulman et al. 2017; rsl_rl). Actions are sampled unbounded; the env clips to [-1, 1].
- `TanhGaussianActor` (SAC): state-dependent mean and log-std, sample ``u ~ N``,
  action ``a = tanh(u)`` with the change-of-variables log-prob correction
  ``log pi(a) = log N(u) - sum log(1 - tanh(u)^2)`` (Haarnoja et al. 2018, appendix C),
  computed in the stable form ``2 (log 2 - u - softplus(-2u))``.
- `ValueCritic`, `QCritic` (Q(s, a)), `QNetwork` (Q(s, .) over discrete actions).
"""

from __future__ import annotations

import math

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


class QNetwork(nn.Module):
    """Q(s, .) over `num_actions` discrete actions (DQN)."""

    def __init__(self, obs_size: int, num_actions: int, hidden: list[int], activation: str = "relu"):
        super().__init__()
        self.net = mlp(obs_size, hidden, num_actions, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)
