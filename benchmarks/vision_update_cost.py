"""Cost of one BC update from pixels on this machine, per encoder setting and batch size.

One update = forward + backward + Adam step of `BCTrainer` on two 64x64 cameras + a 21-d
vector group (panda-pick-vision's shapes), random shift included, [256, 256] MLP; random data
(the cost does not depend on the pixels). Median of `--repeats` updates after a warm-up, with
`--threads` torch threads. Also the forward pass alone for 64 observations (an evaluation
step of 64 envs). Usage:

    python benchmarks/vision_update_cost.py
    python benchmarks/vision_update_cost.py --threads 2 --batches 128 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from roboreal.agents.bc import BCConfig, BCTrainer
from roboreal.data import TransitionSet

SHAPES = [("front", (3, 64, 64)), ("wrist", (3, 64, 64))]
ENCODERS = {
    "32 channels, strides [2, 1, 1, 1] (DrQ)": {"encoder_channels": 32, "encoder_strides": [2, 1, 1, 1]},
    "32 channels, strides [2, 2, 1, 1] (default)": {"encoder_channels": 32},
    "32 channels, spatial softmax": {"encoder_channels": 32, "encoder_head": "spatial_softmax"},
    "16 channels, strides [2, 2, 1, 1]": {"encoder_channels": 16},
}


def dataset(n: int) -> TransitionSet:
    g = torch.Generator().manual_seed(0)
    obs = {"policy": torch.randn(n, 21, generator=g)}
    obs.update({c: torch.randint(0, 256, (n, *s), dtype=torch.uint8, generator=g) for c, s in SHAPES})
    labels = torch.rand(n, 8, generator=g) * 2 - 1
    ep = torch.arange(n) // 100
    return TransitionSet(obs=obs, labels=labels, labeled=torch.ones(n, dtype=torch.bool), episode=ep,
                         step=torch.arange(n) % 100, episode_end=(ep + 1) * 100, actions=labels.clone(),
                         next_achieved=None, names=[f"demo_{i}" for i in range(int(ep.max()) + 1)])


def update_ms(cfg: BCConfig, ts: TransitionSet, repeats: int) -> float:
    trainer = BCTrainer(21, 8, cfg, image_shapes=SHAPES)
    trainer.fit_normalizer(ts)
    times = []
    for i in range(repeats + 2):
        idx = torch.randint(0, len(ts), (cfg.batch_size,))
        start = time.perf_counter()
        loss, _ = trainer.loss(trainer._inputs(ts, idx, relabel=False), ts.labels[idx],
                               trainer._images(ts, idx, augment=True))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def forward_ms(cfg: BCConfig, ts: TransitionSet, repeats: int) -> float:
    policy = BCTrainer(21, 8, cfg, image_shapes=SHAPES).policy()
    obs = [ts.obs["policy"][:64]] + [ts.obs[c][:64] for c, _ in SHAPES]
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            start = time.perf_counter()
            policy(*obs)
            if i >= 2:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[256, 128])
    p.add_argument("--repeats", type=int, default=6)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ts = dataset(2048)
    print(f"torch threads {args.threads}; median of {args.repeats} updates (ms)")
    print(f"{'encoder':45s} " + " ".join(f"{f'batch {b}':>10s}" for b in args.batches) + f" {'fwd 64 obs':>11s}")
    for name, enc in ENCODERS.items():
        row = [update_ms(BCConfig(batch_size=b, **enc), ts, args.repeats) for b in args.batches]
        fwd = forward_ms(BCConfig(**enc), ts, args.repeats)
        print(f"{name:45s} " + " ".join(f"{v:10.0f}" for v in row) + f" {fwd:11.1f}")


if __name__ == "__main__":
    main()
