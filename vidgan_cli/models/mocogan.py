"""MoCoGAN (Tulyakov et al. 2018): a clip is a fixed content code plus a trajectory of motion codes.

G splits z into a content part (held for the whole clip) and an initial motion state; a GRU driven
by fresh per-frame noise (and the class) rolls the motion state forward, and a shared 2D image
generator renders each frame from [content, motion_t]. Because motion is recurrent, ``sample`` can
roll it for more frames than the model was trained on. D has an image head on random single frames
and a 3D video head (see :mod:`vidgan_cli.models.dual`), returned as two logits.
"""

from __future__ import annotations

import torch
from torch import nn

from vidgan_cli.models.blocks import (
    FrameGenerator,
    check_allowed_sizes,
    frames_to_video,
    module_device,
    repeat_per_frame,
)
from vidgan_cli.models.dual import DualDiscriminator

FRAMES = (4, 8, 16, 32)
RESOLUTIONS = (16, 32, 64, 128, 256)
MAX_SAMPLE_FRAMES = 1024


class Generator(nn.Module):
    def __init__(self, *, z_dim: int = 128, num_classes: int = 0, frames: int = 16,
                 resolution: int = 64, motion_dim: int = 32, noise_dim: int = 16,
                 base_channels: int = 16, max_channels: int = 256, block: str = "plain",
                 spectral_norm: bool = False):
        self.check_sizes(frames, resolution)
        if not 0 < motion_dim < z_dim:
            raise ValueError(f"motion_dim={motion_dim} must be in 1..z_dim-1 (z_dim={z_dim}); the "
                             "rest of z is the content code")
        super().__init__()
        self.config = dict(z_dim=z_dim, num_classes=num_classes, frames=frames, resolution=resolution,
                           motion_dim=motion_dim, noise_dim=noise_dim, base_channels=base_channels,
                           max_channels=max_channels, block=block, spectral_norm=spectral_norm)
        self.z_dim, self.num_classes, self.frames = z_dim, num_classes, frames
        self.motion_dim, self.noise_dim = motion_dim, noise_dim
        # The class steers motion (e.g. how a shape moves) as well as appearance (CBN in frames).
        self.class_motion = nn.Embedding(num_classes, noise_dim) if num_classes > 0 else None
        gru_input = noise_dim * (2 if num_classes > 0 else 1)
        self.motion = nn.GRUCell(gru_input, motion_dim)
        self.render = FrameGenerator(z_dim, num_classes, resolution, base_channels, max_channels, block,
                                     spectral_norm)

    @classmethod
    def check_sizes(cls, frames: int, resolution: int) -> None:
        check_allowed_sizes("mocogan", frames, resolution, FRAMES, RESOLUTIONS)

    def motion_codes(self, motion_state: torch.Tensor, noise: torch.Tensor,
                     y: torch.Tensor | None) -> torch.Tensor:
        """Roll the GRU over per-frame noise [B, T, noise_dim] -> motion codes [B, T, motion_dim]."""
        if self.class_motion is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass y (class ids [B])")
            label = self.class_motion(y).unsqueeze(1).expand(-1, noise.shape[1], -1)
            noise = torch.cat([noise, label], dim=2)
        # The recurrence is tiny; fp32 keeps long rollouts stable under bf16 autocast.
        with torch.autocast(motion_state.device.type, enabled=False):
            h, codes = motion_state.float(), []
            for step_noise in noise.float().unbind(1):
                h = self.motion(step_noise, h)
                codes.append(h)
        return torch.stack(codes, dim=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, *,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """z [B, z_dim] -> video [B, 3, T, H, W]; ``noise`` [B, T, noise_dim] sets T (default: trained
        length, drawn from the global RNG)."""
        batch = z.shape[0]
        if noise is None:
            noise = torch.randn(batch, self.frames, self.noise_dim, device=z.device)
        frames = noise.shape[1]
        content, motion_state = z[:, :-self.motion_dim], z[:, -self.motion_dim:]
        motion = self.motion_codes(motion_state, noise, y)  # [B, T, motion_dim]
        latents = torch.cat([content.unsqueeze(1).expand(-1, frames, -1), motion.to(content.dtype)], 2)
        images = self.render(latents.flatten(0, 1), repeat_per_frame(y, frames))
        return frames_to_video(images, batch)

    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None,
               frames: int | None = None) -> torch.Tensor:
        frames = self.frames if frames is None else frames
        if not 1 <= frames <= MAX_SAMPLE_FRAMES:
            raise ValueError(f"mocogan samples 1..{MAX_SAMPLE_FRAMES} frames; got frames={frames}")
        device = module_device(self)
        z = torch.randn(n, self.z_dim, generator=generator, device=device)
        noise = torch.randn(n, frames, self.noise_dim, generator=generator, device=device)
        return self(z, y, noise=noise)


class Discriminator(DualDiscriminator):
    """Image head on random single frames + full-resolution 3D video head (MoCoGAN's D_I and D_V)."""

    MODEL_NAME = "mocogan"

    def __init__(self, *, num_classes: int = 0, frames: int = 16, resolution: int = 64,
                 base_channels: int = 16, max_channels: int = 256, frames_per_clip: int = 1,
                 video_downsample: int = 1, block: str = "plain", spectral_norm: bool = True):
        super().__init__(num_classes=num_classes, frames=frames, resolution=resolution,
                         base_channels=base_channels, max_channels=max_channels,
                         frames_per_clip=frames_per_clip, video_downsample=video_downsample,
                         block=block, spectral_norm=spectral_norm)
