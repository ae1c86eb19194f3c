"""Feature extractors: what a metric group computes from a batch of ``uint8 [B, T, H, W, 3]`` clips.

One extractor serves every metric that needs its features (``fvd`` and ``kvd`` share the I3D pass).
Each returns a dict of per-clip tensors ``[B, ...]`` on the CPU, and names the weights it depends on
so the real-data features can be cached under a key that changes when the weights do.
"""

from __future__ import annotations

import os

import torch

from vidgan_cli.metrics.i3d import I3D_FILENAME, load_i3d, preprocess_for_i3d
from vidgan_cli.metrics.motion import motion_stats
from vidgan_cli.metrics.shapes_eval import file_sha256, load_shapes_evaluator

I3D_ENV = "VIDGAN_I3D_PATH"
I3D_CHUNK = 4   # clips per I3D forward: a 16-frame 224 px clip needs ~0.5 GB of activations


class ShapesFeatures:
    """Evaluator features and predictions plus the analytic motion statistics of each clip."""

    name = "shapes"
    needs_floor = True   # FD-shapes is reported beside its real-vs-real floor

    def __init__(self, dataset, device):
        from vidgan_cli.data.shapes import ShapesDataset

        if not isinstance(dataset, ShapesDataset):
            raise ValueError(f"the shapes metrics need dataset=shapes (got {type(dataset).__name__}); "
                             "use metrics=[fvd,kvd] for other data")
        self.evaluator = load_shapes_evaluator(device=device)
        self.evaluator.check_compatible(frames=dataset.frames, class_names=list(dataset.class_names))
        self.class_index = self.evaluator.class_index(list(dataset.class_names))

    @property
    def weights(self) -> dict[str, str]:
        return {"shapes_evaluator.pt": self.evaluator.sha256}

    def __call__(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        features, pred = self.evaluator(clips)
        return {"features": features, "pred": pred, **motion_stats(clips)}


def resolve_i3d_path(i3d_path: str | os.PathLike | None) -> str | None:
    """The I3D weights path: the argument, else the ``VIDGAN_I3D_PATH`` environment variable."""
    path = i3d_path or os.environ.get(I3D_ENV) or None
    return os.path.expanduser(str(path)) if path else None


class I3DFeatures:
    """The FVD features: Kinetics-400 I3D logits averaged over time, ``[B, 400]``."""

    name = "i3d"
    needs_floor = False

    def __init__(self, i3d_path: str | os.PathLike | None, device):
        path = resolve_i3d_path(i3d_path)
        self.model = load_i3d(path, device=device)
        self.device = torch.device(device)
        self.sha256 = file_sha256(path)

    @property
    def weights(self) -> dict[str, str]:
        return {I3D_FILENAME: self.sha256}

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = [self.model(preprocess_for_i3d(chunk).to(self.device)).double().cpu()
                  for chunk in clips.split(I3D_CHUNK)]
        return {"features": torch.cat(logits)}
