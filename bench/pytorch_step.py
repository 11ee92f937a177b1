#!/usr/bin/env python
"""The PyTorch recipe of the ATOM training step, the reference `bench/train_step.py` compares
atom_tf with (run by it right after its own steps, in the same job; torch is the `bench` extra:
`pip install -e '.[bench]'`).

The same step as atom_tf's (docs/protocol.md §2): DenseNet-BC-100 (growth 12, compression 0.5,
11 outputs), 64 in-distribution images + 128 outliers, PGD-5 (ε 8/255, step 2/255, random
start, the network in inference mode) on the last 64 outliers pushing them off the K+1-th
class, then one SGD step (momentum 0.9, Nesterov, weight decay 5e-4) on the cross-entropy of
all 192 images (outliers labelled K). Written for atom_tf; it shares no code with it.

    python bench/pytorch_step.py [--steps=3] [--threads=N]

Prints one line: `pytorch ATOM step: S s (median of N), P parameters, T threads, torch V`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class Bottleneck(nn.Module):
    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = (
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, 4 * growth, 1, bias=False),
        )
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        return torch.cat([x, self.conv2(F.relu(self.bn2(y)))], 1)


class Transition(nn.Module):
    def __init__(self, channels: int, out: int):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(channels), nn.Conv2d(channels, out, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


def densenet_bc(depth: int = 100, growth: int = 12, outputs: int = 11) -> nn.Module:
    layers_per_block = (depth - 4) // 6
    channels = 2 * growth
    modules: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
    for block in range(3):
        for _ in range(layers_per_block):
            modules.append(Bottleneck(channels, growth))
            channels += growth
        if block < 2:
            modules.append(Transition(channels, channels // 2))
            channels //= 2
    modules += [nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(channels, outputs)]  # fmt: skip
    return nn.Sequential(*modules)


def pgd_off_class(model: nn.Module, images: torch.Tensor, cls: int, epsilon=8 / 255,
                  step=2 / 255, steps=5) -> torch.Tensor:  # fmt: skip
    """L∞ PGD raising the cross-entropy of class `cls` (the outliers' K+1-th class)."""
    model.eval()
    target = torch.full((len(images),), cls, dtype=torch.long)
    with torch.no_grad():
        model(images)  # the clean evaluation atom_tf's attack makes too
    x = (images + torch.empty_like(images).uniform_(-epsilon, epsilon)).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), target)
        (grad,) = torch.autograd.grad(loss, x)
        x = torch.min(
            torch.max(x.detach() + step * grad.sign(), images - epsilon), images + epsilon
        )
        x = x.clamp(0, 1)
    with torch.no_grad():
        model(x)  # the final iterate's evaluation
    model.train()
    return x.detach()


def atom_step(model, optimizer, x_in, y_in, x_out, num_classes: int = 10) -> float:
    half = len(x_out) // 2
    x_out = torch.cat([x_out[:half], pgd_off_class(model, x_out[half:], num_classes)])
    images = torch.cat([x_in, x_out])
    labels = torch.cat([y_in, torch.full((len(x_out),), num_classes, dtype=torch.long)])
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = densenet_bc()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)  # fmt: skip
    x_in, y_in = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))
    x_out = torch.rand(128, 3, 32, 32)
    seconds = []
    for step in range(args.steps + 1):
        start = time.perf_counter()
        atom_step(model, optimizer, x_in, y_in, x_out)
        if step:  # the first is a warm-up
            seconds.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"pytorch ATOM step: {statistics.median(seconds):.2f} s (median of {args.steps}), "
          f"{params:,} parameters, {args.threads} threads, torch {torch.__version__}")  # fmt: skip


if __name__ == "__main__":
    main()
