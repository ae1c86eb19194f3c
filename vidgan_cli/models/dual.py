"""A DVD-GAN-style dual discriminator (Clark et al. 2019), usable with any generator.

The spatial head judges k randomly chosen full-resolution frames of each clip (2D convolutions,
projection); the temporal head judges the whole clip after spatial average pooling (3D
convolutions, projection). Splitting the work this way keeps the expensive 3D path at a lower
resolution while single frames keep full detail. ``forward`` returns ``(spatial, temporal)``,
two ``[B]`` logits; the loss sums the heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidgan_cli.models.blocks import (
    DownStack,
    ProjectionHead,
    check_allowed_sizes,
    num_stages,
    repeat_per_frame,
    time_steps,
)

FRAMES = (4, 8, 16, 32)
RESOLUTIONS = (16, 32, 64, 128, 256)
VIDEO_DOWNSAMPLES = (1, 2, 4)


def random_frames(video: torch.Tensor, k: int) -> torch.Tensor:
    """k distinct random frames per clip: [B, 3, T, H, W] -> [B * k, 3, H, W] (clip-major)."""
    batch, frames = video.shape[0], video.shape[2]
    order = torch.rand(batch, frames, device=video.device).argsort(dim=1)[:, :k]  # [B, k]
    clip = torch.arange(batch, device=video.device).view(batch, 1)
    return video[clip, :, order].flatten(0, 1)  # advanced indices first: [B, k, 3, H, W]


class FrameDiscriminator(nn.Module):
    """2D projection discriminator on single frames: [N, 3, R, R], y [N] -> logits [N]."""

    def __init__(self, num_classes: int, resolution: int, base_channels: int, max_channels: int,
                 block: str, spectral: bool):
        super().__init__()
        self.body = DownStack(resolution, base_channels, max_channels, block, spectral, dims=2)
        self.head = ProjectionHead(self.body.out_channels, num_classes, spectral)

    def forward(self, frames: torch.Tensor, y: torch.Tensor | None, class_scores: bool = False):
        return self.head(self.body(frames), y, class_scores)


class VideoDiscriminator(nn.Module):
    """3D projection discriminator on whole clips: [B, 3, T, R, R], y [B] -> logits [B]."""

    def __init__(self, num_classes: int, frames: int, resolution: int, base_channels: int,
                 max_channels: int, block: str, spectral: bool):
        super().__init__()
        time_down = time_steps(frames, num_stages(resolution))
        self.body = DownStack(resolution, base_channels, max_channels, block, spectral, dims=3,
                              time_down=time_down)
        self.head = ProjectionHead(self.body.out_channels, num_classes, spectral)

    def forward(self, video: torch.Tensor, y: torch.Tensor | None, class_scores: bool = False):
        return self.head(self.body(video), y, class_scores)


class DualDiscriminator(nn.Module):
    MODEL_NAME = "dual"

    def __init__(self, *, num_classes: int = 0, frames: int = 16, resolution: int = 64,
                 base_channels: int = 16, max_channels: int = 256, frames_per_clip: int = 4,
                 video_downsample: int = 2, block: str = "plain", spectral_norm: bool = True):
        self.check_sizes(frames, resolution)
        if video_downsample not in VIDEO_DOWNSAMPLES or resolution // video_downsample < 8:
            raise ValueError(f"video_downsample={video_downsample} must be one of {VIDEO_DOWNSAMPLES} "
                             f"and leave the temporal head >= 8 px (resolution={resolution})")
        if not 1 <= frames_per_clip <= frames:
            raise ValueError(f"frames_per_clip={frames_per_clip} must be in 1..frames ({frames})")
        super().__init__()
        self.config = dict(num_classes=num_classes, frames=frames, resolution=resolution,
                           base_channels=base_channels, max_channels=max_channels,
                           frames_per_clip=frames_per_clip, video_downsample=video_downsample,
                           block=block, spectral_norm=spectral_norm)
        self.num_classes, self.frames_per_clip = num_classes, frames_per_clip
        self.video_downsample = video_downsample
        self.spatial = FrameDiscriminator(num_classes, resolution, base_channels, max_channels, block,
                                          spectral_norm)
        self.temporal = VideoDiscriminator(num_classes, frames, resolution // video_downsample,
                                           base_channels, max_channels, block, spectral_norm)

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes(cls.MODEL_NAME, frames, resolution, FRAMES, RESOLUTIONS)

    def forward(self, video: torch.Tensor, y: torch.Tensor | None = None, class_scores: bool = False):
        """``(spatial, temporal)`` logits; with ``class_scores`` also the two heads' class scores
        summed (the spatial head's averaged over its frames), ``[B, num_classes]``."""
        k, batch = self.frames_per_clip, video.shape[0]
        spatial = self.spatial(random_frames(video, k), repeat_per_frame(y, k), class_scores)
        d = self.video_downsample
        pooled = F.avg_pool3d(video, (1, d, d)) if d > 1 else video
        temporal = self.temporal(pooled, y, class_scores)
        if not class_scores:
            return spatial.view(batch, k).mean(dim=1), temporal
        (spatial, frame_scores), (temporal, clip_scores) = spatial, temporal
        scores = frame_scores.view(batch, k, -1).mean(dim=1) + clip_scores
        return (spatial.view(batch, k).mean(dim=1), temporal), scores
