"""Train the built-in shapes evaluator that ``vidgan evaluate metrics=[shapes]`` ships with.

    python scripts/train_shapes_evaluator.py            # writes vidgan_cli/metrics/weights/
    python scripts/train_shapes_evaluator.py --steps 100 --out /tmp/ev/shapes_evaluator.pt   # a quick try

Fixed seeds, CPU only; the same command on the same machine (and thread count) gives bit-identical
tensors (the .pt bytes still differ: torch.save writes a random serialization id, so the sha256 changes).
Training clips come from ``ShapesDataset(seed=TRAIN_SEED)`` with all six shapes, rendered at 32 px and
at 64 px (the latter resized to the canonical 32 px, as the evaluator does at evaluation time), with
one or two objects, slightly wider radius/speed ranges than the dataset defaults and mild pixel noise,
so the classifier does not depend on one rendering.  Accuracy is measured on held-out clips of another
dataset seed with the default dataset settings, at 32 and 64 px, and written into the settings JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidgan_cli.data.shapes import SHAPE_NAMES, ShapesDataset
from vidgan_cli.metrics.shapes_eval import (
    DEFAULT_WEIGHTS,
    ShapesClassifier,
    clips_to_input,
    file_sha256,
    settings_path,
)

FRAMES, RESOLUTION = 16, 32
TRAIN_SEED, HELDOUT_SEED = 1, 777
TRAIN_RENDER = [(res, objects) for res in (32, 64) for objects in (1, 1, 2)]
TRAIN_RANGES = {"min_radius": 0.1, "max_radius": 0.22, "min_speed": 0.5, "max_speed": 3.5}
MAX_NOISE = 0.15   # std of the Gaussian pixel noise (in [-1, 1] units), drawn per clip from U(0, MAX_NOISE)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file (.pt); JSON beside it")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout-clips", type=int, default=1200, help="per resolution (32 and 64 px)")
    return p.parse_args()


def training_batch(datasets: list[ShapesDataset], step: int, batch_size: int, rng: np.random.Generator,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ds = datasets[step % len(datasets)]
    indices = rng.integers(0, len(ds), size=batch_size).tolist()
    clips, labels = ds.__getitems__(indices)
    x = clips_to_input(clips, RESOLUTION)
    sigma = torch.rand(batch_size, 1, 1, 1, 1, generator=gen) * MAX_NOISE
    x = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    return x, labels


@torch.no_grad()
def heldout_accuracy(net: ShapesClassifier, resolution: int, clips: int, batch_size: int = 100) -> float:
    ds = ShapesDataset(frames=FRAMES, resolution=resolution, num_classes=len(SHAPE_NAMES),
                       seed=HELDOUT_SEED, length=clips)
    correct = 0
    for start in range(0, clips, batch_size):
        video, labels = ds.__getitems__(range(start, min(start + batch_size, clips)))
        correct += int((net(clips_to_input(video, RESOLUTION)).argmax(1) == labels).sum())
    return correct / clips


def train(args: argparse.Namespace) -> ShapesClassifier:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    datasets = [ShapesDataset(frames=FRAMES, resolution=res, num_classes=len(SHAPE_NAMES),
                              seed=TRAIN_SEED, length=10**9, objects=objects, **TRAIN_RANGES)
                for res, objects in TRAIN_RENDER]
    net = ShapesClassifier(num_classes=len(SHAPE_NAMES), width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1))))
    net.train()
    start = time.time()
    for step in range(args.steps):
        x, y = training_batch(datasets, step, args.batch_size, rng, gen)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.1f}s", flush=True)
    return net.eval()


def main() -> None:
    args = parse_args()
    start = time.time()
    net = train(args)
    train_seconds = time.time() - start
    accuracy = {str(res): heldout_accuracy(net, res, args.heldout_clips) for res in (32, 64)}
    print(f"held-out accuracy: {accuracy}  (training {train_seconds:.0f}s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, args.out)
    settings = {
        "frames": FRAMES, "resolution": RESOLUTION, "class_names": list(SHAPE_NAMES),
        "architecture": net.config,
        "resize": "clips of other resolutions are resized spatially (bilinear, antialiased) to resolution",
        "train": {"dataset_seed": TRAIN_SEED, "render": TRAIN_RENDER, **TRAIN_RANGES, "max_noise": MAX_NOISE,
                  "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                  "seconds": round(train_seconds), "torch": torch.__version__},
        "heldout": {"dataset_seed": HELDOUT_SEED, "clips_per_resolution": args.heldout_clips,
                    "dataset_settings": "ShapesDataset defaults, 6 classes, objects=1",
                    "accuracy": accuracy},
        "sha256": file_sha256(args.out),
    }
    settings_path(args.out).write_text(json.dumps(settings, indent=2) + "\n")
    print(f"wrote {args.out} and {settings_path(args.out)}")


if __name__ == "__main__":
    main()
