"""cgan3d: a class-conditional 3D-convolutional video GAN (a DCGAN/BigGAN-style 3D baseline).

G maps z to a small [C, t0, 4, 4] volume and upsamples it x2 per stage (time too in the coarsest
stages) with class-conditional BatchNorm; D mirrors it with strided 3D convolutions, spectral norm,
global sum pooling and a projection head. ``num_classes: 0`` makes both unconditional.
"""

from __future__ import annotations

import torch
from torch import nn

from vidgan_cli.models.blocks import (
    DownStack,
    ProjectionHead,
    UpStack,
    check_allowed_sizes,
    num_stages,
    sample_trained_length,
    sn,
    time_steps,
)

FRAMES = (4, 8, 16, 32)
RESOLUTIONS = (16, 32, 64, 128, 256)


class Generator(nn.Module):
    def __init__(self, *, z_dim: int = 128, num_classes: int = 0, frames: int = 16,
                 resolution: int = 64, base_channels: int = 16, max_channels: int = 256,
                 block: str = "plain", spectral_norm: bool = False):
        self.check_sizes(frames, resolution)
        super().__init__()
        self.config = dict(z_dim=z_dim, num_classes=num_classes, frames=frames, resolution=resolution,
                           base_channels=base_channels, max_channels=max_channels, block=block,
                           spectral_norm=spectral_norm)
        self.z_dim, self.num_classes, self.frames = z_dim, num_classes, frames
        time_up = time_steps(frames, num_stages(resolution))
        self.t0 = frames >> sum(time_up)
        self.body = UpStack(num_classes, resolution, base_channels, max_channels, block, spectral_norm,
                            dims=3, time_up=time_up)
        self.stem = sn(nn.Linear(z_dim, self.body.in_channels * self.t0 * 16), spectral_norm)

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes("cgan3d", frames, resolution, FRAMES, RESOLUTIONS)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(z).view(z.shape[0], -1, self.t0, 4, 4)
        return self.body(h, y)

    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
               frames: int | None = None) -> torch.Tensor:
        return sample_trained_length(self, "cgan3d", n, y, generator, frames)


class Discriminator(nn.Module):
    def __init__(self, *, num_classes: int = 0, frames: int = 16, resolution: int = 64,
                 base_channels: int = 16, max_channels: int = 256, block: str = "plain",
                 spectral_norm: bool = True):
        self.check_sizes(frames, resolution)
        super().__init__()
        self.config = dict(num_classes=num_classes, frames=frames, resolution=resolution,
                           base_channels=base_channels, max_channels=max_channels, block=block,
                           spectral_norm=spectral_norm)
        self.num_classes = num_classes
        time_down = time_steps(frames, num_stages(resolution))
        self.blocks = DownStack(resolution, base_channels, max_channels, block, spectral_norm, dims=3,
                                time_down=time_down)
        self.head = ProjectionHead(self.blocks.out_channels, num_classes, spectral_norm)

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes("cgan3d", frames, resolution, FRAMES, RESOLUTIONS)

    def forward(self, video: torch.Tensor, y: torch.Tensor | None = None, class_scores: bool = False):
        """Logits [B]; with ``class_scores`` also the per-class projection scores [B, num_classes]."""
        return self.head(self.blocks(video), y, class_scores)
