"""Learning from pixels: a small convolutional encoder, random-shift augmentation, and the
image actor that the ``gaussian_image`` policy kind rebuilds.

- `ConvEncoder`: uint8 ``(B, C, H, W)`` -> a ``features``-d vector. ``uint8 -> float / 255``
  happens inside (an exported policy takes the camera's bytes as they are). A few 3x3
  convolutions with ReLU (DrQ / SAC-AE, Yarats et al. 2021, 2019), then one of two heads:
  ``linear``: flatten -> Linear -> LayerNorm -> tanh (DrQ's); ``spatial_softmax``: a
  softmax over each channel's positions gives its expected image coordinates (one 2-D
  keypoint per channel, Levine et al. 2016; Finn et al. 2016) -> Linear -> LayerNorm ->
  tanh. The default strides (2, 2, 1, 1) are cheaper than DrQ's (2, 1, 1, 1): on one CPU
  thread the convolutions dominate the cost of a BC update, and 64x64 images keep 11x11
  cells after them (figures in agents/README.md).
- `random_shift`: DrQ's augmentation (pad by ``pad`` pixels replicating the border, crop
  back at a random offset) per image, on the uint8 batch (clamped indexing pads: a clamped
  index *is* edge replication; one gather crops). Training only.
- `ImageGaussianActor`: one `ConvEncoder` per camera (the front camera and the wrist
  camera see different things at different scales, so they do not share weights; the
  compute is the same either way), their features concatenated with the (normalized)
  vector observation, then the MLP mean head of `GaussianActor` and its learned log-std
  (BC's ``policy="gaussian"``). ``forward(obs, *images)`` is the deterministic mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from roboreal.agents.networks import mlp, orthogonal_init
from roboreal.config import ConfigError

ImageShapes = list[tuple[str, tuple[int, int, int]]]  # [(camera, (C, H, W)), ...] in call order

ENCODER_DEFAULTS = {"channels": 32, "strides": [2, 2, 1, 1], "features": 64, "head": "linear"}


@dataclass
class ImageEncoderCfg:
    """The encoder keys every learner from pixels shares (BC's and PPO's configs inherit them,
    flat, so each is a ``key=value`` override)."""

    encoder_channels: int = 32
    encoder_strides: list[int] = field(default_factory=lambda: [2, 2, 1, 1])  # 3x3 convolutions
    encoder_head: Literal["linear", "spatial_softmax"] = "linear"
    image_features: int = 64  # per camera
    shift_pad: int = 4  # random-shift augmentation (DrQ), pixels; 0 = off

    def check_encoder_fields(self) -> None:
        if self.shift_pad < 0:
            raise ConfigError("shift_pad", f"must be >= 0, got {self.shift_pad}")
        if not self.encoder_strides or any(int(v) < 1 for v in self.encoder_strides):
            raise ConfigError("encoder_strides", f"needs at least one stride >= 1, got {self.encoder_strides}")

    def encoder(self) -> dict:
        """`ConvEncoder` keyword arguments."""
        return {"channels": int(self.encoder_channels), "strides": [int(v) for v in self.encoder_strides],
                "features": int(self.image_features), "head": self.encoder_head}


def resolve_image_inputs(images: str, available: list[str] | dict, where: str = "the dataset") -> list[str]:
    """The cameras a policy reads: ``images`` (``auto`` | ``none`` | ``"front,wrist"``) against the
    image groups `available` (in their order)."""
    available = list(available)
    if images in ("auto", ""):
        return available
    if images == "none":
        return []
    wanted = [c.strip() for c in images.split(",") if c.strip()]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise ConfigError("images", f"{where} has no camera image {missing[0]!r} (has {available or 'none'})")
    return wanted


def conv_output_size(size: int, strides: list[int] | tuple[int, ...], kernel: int = 3) -> int:
    """Side length after unpadded ``kernel`` x ``kernel`` convolutions with these strides."""
    for s in strides:
        size = (size - kernel) // s + 1
    return size


class SpatialSoftmax(nn.Module):
    """``(B, C, h, w)`` -> ``(B, 2C)``: per channel, the softmax-weighted mean image coordinate
    (x, y in [-1, 1]), with a learned temperature."""

    def __init__(self, height: int, width: int):
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("pos", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))  # (h*w, 2)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        attention = torch.softmax(x.flatten(2) / self.log_temperature.exp(), dim=-1)  # (B, C, h*w)
        return (attention @ self.pos).reshape(b, c * 2)


class ConvEncoder(nn.Module):
    """uint8 image ``(B, C, H, W)`` -> ``(B, features)`` (see the module docstring)."""

    def __init__(self, shape: tuple[int, int, int] | list[int], channels: int = 32,
                 strides: list[int] | tuple[int, ...] = (2, 2, 1, 1), features: int = 64, head: str = "linear"):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        if head not in ("linear", "spatial_softmax"):
            raise ValueError(f"encoder head must be 'linear' or 'spatial_softmax', got {head!r}")
        oh, ow = conv_output_size(h, strides), conv_output_size(w, strides)
        if oh < 1 or ow < 1:
            raise ValueError(f"a {h}x{w} image is too small for convolutions with strides {list(strides)}")
        layers: list[nn.Module] = []
        last = c
        for s in strides:
            layers += [nn.Conv2d(last, channels, 3, stride=int(s)), nn.ReLU()]
            last = channels
        self.convs = nn.Sequential(*layers)
        self.head = head
        self.keypoints = SpatialSoftmax(oh, ow) if head == "spatial_softmax" else nn.Identity()
        flat = channels * 2 if head == "spatial_softmax" else channels * oh * ow
        self.project = nn.Sequential(nn.Linear(flat, features), nn.LayerNorm(features), nn.Tanh())
        self.features = int(features)
        for m in self.convs:
            if isinstance(m, nn.Conv2d):  # DrQ's initialization of the conv trunk
                nn.init.orthogonal_(m.weight, nn.init.calculate_gain("relu"))
                nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.convs(image.float() / 255.0)
        x = self.keypoints(x) if self.head == "spatial_softmax" else x.flatten(1)
        return self.project(x)


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's random shift of a batch ``(B, C, H, W)`` (any dtype, kept): each image moved by
    an integer offset in ``[-pad, pad]`` per axis, borders replicated."""
    if pad <= 0:
        return images
    b, c, h, w = images.shape
    dev = images.device
    # the padded batch by clamped indexing (a clamped index is edge replication; works on uint8)
    padded = images.index_select(2, (torch.arange(h + 2 * pad, device=dev) - pad).clamp_(0, h - 1))
    padded = padded.index_select(3, (torch.arange(w + 2 * pad, device=dev) - pad).clamp_(0, w - 1))
    offset = (torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)).to(dev)
    rows = torch.arange(h, device=dev)[None, :] + offset[:, :1]  # (B, H) rows of the padded image
    cols = torch.arange(w, device=dev)[None, :] + offset[:, 1:]  # (B, W)
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, index).reshape(b, c, h, w)


def image_shapes_list(shapes) -> ImageShapes:
    """``[(camera, (C, H, W)), ...]`` from a list of pairs or an ordered dict (checkpoint form: lists)."""
    items = shapes.items() if isinstance(shapes, dict) else shapes
    return [(str(name), tuple(int(v) for v in shape)) for name, shape in items]


class ImageGaussianActor(nn.Module):
    """Per-camera `ConvEncoder` features + the vector observation -> MLP mean (+ learned log-std).

    Called as ``actor(obs_size, action_size, hidden, activation, image_shapes, encoder)`` by
    `build_policy` (``image_shapes``: ``[[camera, [C, H, W]], ...]`` in call order; ``encoder``:
    `ConvEncoder` keyword arguments)."""

    def __init__(self, obs_size: int, action_size: int, hidden: list[int], activation: str = "elu",
                 image_shapes: ImageShapes | list | dict | None = None, encoder: dict | None = None,
                 init_std: float = 1.0):
        super().__init__()
        self.image_shapes = image_shapes_list(image_shapes or [])
        if not self.image_shapes:
            raise ValueError("an image actor needs at least one camera")
        enc = {**ENCODER_DEFAULTS, **(encoder or {})}
        self.encoders = nn.ModuleList([ConvEncoder(shape, **enc) for _, shape in self.image_shapes])
        features = sum(e.features for e in self.encoders)
        self.mean_net = orthogonal_init(mlp(obs_size + features, hidden, action_size, activation), out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    @property
    def cameras(self) -> list[str]:
        return [name for name, _ in self.image_shapes]

    @property
    def features(self) -> int:
        """Size of the concatenated image features (what `encode` returns)."""
        return sum(e.features for e in self.encoders)

    def encode(self, *images: torch.Tensor) -> torch.Tensor:
        """The cameras' features, concatenated in call order: ``(B, features)``."""
        return torch.cat([encoder(image) for encoder, image in zip(self.encoders, images)], dim=-1)

    def act_from_features(self, obs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.mean_net(torch.cat([obs, features], dim=-1))

    def forward(self, obs: torch.Tensor, *images: torch.Tensor) -> torch.Tensor:
        """Deterministic action (the mean) from the normalized vector and the uint8 images."""
        return self.act_from_features(obs, self.encode(*images))


def image_groups(obs: dict[str, torch.Tensor]) -> list[str]:
    """The image entries of an observation dict / `TransitionSet.obs`: uint8 (N, C, H, W)."""
    return [k for k, v in obs.items() if v.dtype == torch.uint8 and v.dim() == 4]


IMAGE_POLICY_KIND = "gaussian_image"


def image_policy_state(state: dict, image_shapes: ImageShapes, encoder: dict) -> dict:
    """A learner's vector ``policy`` checkpoint entry made the ``gaussian_image`` kind: the
    cameras (call order) in ``image_inputs``, their shapes and the encoder in ``args``."""
    state["kind"] = IMAGE_POLICY_KIND
    state["image_inputs"] = [camera for camera, _ in image_shapes]
    state["args"]["image_shapes"] = [[camera, list(shape)] for camera, shape in image_shapes]
    state["args"]["encoder"] = dict(encoder)
    return state
