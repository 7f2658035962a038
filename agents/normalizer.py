"""Running observation normalization, saved with the policy and usable inside an exported model.

`RunningNormalizer` is an `nn.Module`: its statistics are buffers, so they travel in the
module's `state_dict` (checkpoints) and inside a traced/exported policy, and its
`forward` is a plain affine map plus clip that TorchScript and ONNX export handle.

Statistics are merged with the parallel (Chan et al.) mean/variance update in float64,
so millions of samples do not lose precision. Under `torch.distributed` the batch
statistics are all-reduced first, so every rank holds identical statistics.
"""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """``y = clip((x - mean) / sqrt(var + eps), -clip, clip)`` with running mean/var."""

    def __init__(self, size: int, eps: float = 1e-8, clip: float = 10.0):
        super().__init__()
        self.size = int(size)
        self.eps = float(eps)
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("var", torch.ones(size, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, distributed: bool = False) -> None:
        """Merge the statistics of batch ``x`` (B, size) into the running statistics."""
        x = x.reshape(-1, self.size).to(torch.float64)
        stats = torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), x.square().sum(0)])
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(stats)
        n = stats[0]
        if n <= 0:
            return
        batch_mean = stats[1:1 + self.size] / n
        batch_var = (stats[1 + self.size:] / n - batch_mean.square()).clamp_min(0.0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(self.var + self.eps).to(x.dtype)
        return torch.clamp((x - self.mean.to(x.dtype)) / std, -self.clip, self.clip)

    def extra_repr(self) -> str:
        return f"size={self.size}, clip={self.clip}"


class Identity(nn.Module):
    """Stand-in with the normalizer interface when normalization is disabled."""

    def __init__(self, size: int = 0):
        super().__init__()
        self.size = size

    def update(self, x: torch.Tensor, distributed: bool = False) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def make_normalizer(size: int, enabled: bool, clip: float = 10.0) -> nn.Module:
    return RunningNormalizer(size, clip=clip) if enabled else Identity(size)
