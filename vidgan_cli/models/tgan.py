"""TGAN (Saito et al. 2017): a temporal generator turns one latent into a latent per frame, and a
2D image generator renders each frame from [z, frame latent].

The temporal generator is a stack of 1D transposed convolutions that doubles the length from two
positions, so the clip length is fixed by its depth: ``sample(frames=...)`` other than the trained
length is an error. D is the 3D projection discriminator of cgan3d.
"""

from __future__ import annotations

import torch
from torch import nn

from vidgan_cli.models import cgan3d
from vidgan_cli.models.blocks import (
    FrameGenerator,
    check_allowed_sizes,
    frames_to_video,
    repeat_per_frame,
    sample_trained_length,
    sn,
)

FRAMES = (4, 8, 16, 32)
RESOLUTIONS = (16, 32, 64, 128, 256)
BASE_FRAMES = 2  # length of the temporal generator's first feature map


class TemporalGenerator(nn.Module):
    """z [B, in_dim] -> frame latents [B, T, out_dim] in [-1, 1] by 1D transposed convolutions."""

    def __init__(self, in_dim: int, out_dim: int, frames: int, channels: int, spectral: bool):
        super().__init__()
        self.channels = channels
        self.stem = sn(nn.Linear(in_dim, channels * BASE_FRAMES), spectral)
        layers = []
        for _ in range((frames // BASE_FRAMES).bit_length() - 1):  # x2 per layer up to `frames`
            layers += [nn.BatchNorm1d(channels), nn.ReLU(),
                       sn(nn.ConvTranspose1d(channels, channels, 4, 2, padding=1), spectral)]
        layers += [nn.BatchNorm1d(channels), nn.ReLU(), sn(nn.Conv1d(channels, out_dim, 3, padding=1),
                                                          spectral)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.stem(z).view(z.shape[0], self.channels, BASE_FRAMES)
        return torch.tanh(self.body(h)).transpose(1, 2)


class Generator(nn.Module):
    def __init__(self, *, z_dim: int = 128, num_classes: int = 0, frames: int = 16,
                 resolution: int = 64, frame_latent_dim: int = 64, temporal_channels: int = 256,
                 base_channels: int = 16, max_channels: int = 256, block: str = "plain",
                 spectral_norm: bool = False):
        self.check_sizes(frames, resolution)
        super().__init__()
        self.config = dict(z_dim=z_dim, num_classes=num_classes, frames=frames, resolution=resolution,
                           frame_latent_dim=frame_latent_dim, temporal_channels=temporal_channels,
                           base_channels=base_channels, max_channels=max_channels, block=block,
                           spectral_norm=spectral_norm)
        self.z_dim, self.num_classes, self.frames = z_dim, num_classes, frames
        # The class reaches the temporal generator (how things move) by an embedding concatenated to
        # z, and every rendered frame (how things look) through conditional BatchNorm.
        class_dim = z_dim if num_classes > 0 else 0
        self.class_embed = nn.Embedding(num_classes, class_dim) if num_classes > 0 else None
        self.temporal = TemporalGenerator(z_dim + class_dim, frame_latent_dim, frames, temporal_channels,
                                          spectral_norm)
        self.render = FrameGenerator(z_dim + frame_latent_dim, num_classes, resolution, base_channels,
                                     max_channels, block, spectral_norm)

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes("tgan", frames, resolution, FRAMES, RESOLUTIONS)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        temporal_in = z
        if self.class_embed is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass y (class ids [B])")
            temporal_in = torch.cat([z, self.class_embed(y).to(z.dtype)], dim=1)
        frame_latents = self.temporal(temporal_in)  # [B, T, frame_latent_dim]
        batch, frames = frame_latents.shape[:2]
        latents = torch.cat([z.unsqueeze(1).expand(-1, frames, -1), frame_latents.to(z.dtype)], dim=2)
        images = self.render(latents.flatten(0, 1), repeat_per_frame(y, frames))
        return frames_to_video(images, batch)

    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
               frames: int | None = None) -> torch.Tensor:
        return sample_trained_length(self, "tgan", n, y, generator, frames)


class Discriminator(cgan3d.Discriminator):
    """cgan3d's 3D projection discriminator, with tgan's size check."""

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes("tgan", frames, resolution, FRAMES, RESOLUTIONS)
