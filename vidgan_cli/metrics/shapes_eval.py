"""The built-in evaluator for the embedded ``shapes`` data: a small 3D-CNN shape classifier.

It is trained by ``scripts/train_shapes_evaluator.py`` on real clips of all six shapes at one canonical
size (the ``frames`` and ``resolution`` in ``weights/shapes_evaluator.json``) and ships with the package
as a plain state dict, so every run (and CI) gets a quality number offline.

Clips of another resolution are resized spatially (bilinear, antialiased) to the canonical resolution
before they are classified, so one set of weights serves 32 px and 64 px runs alike.  Clips with another
number of frames, or datasets whose class names are not among the evaluator's, are refused: the
evaluator was never shown them and its numbers would mean nothing.

Its penultimate activations (global average of the last conv block) are the features of FD-shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "shapes_evaluator.pt"


def settings_path(weights: str | os.PathLike) -> Path:
    """The settings JSON that travels with a weights file (same name, ``.json``)."""
    return Path(weights).with_suffix(".json")


class ShapesClassifier(nn.Module):
    """``[B, 3, T, R, R]`` in ``[-1, 1]`` -> logits ``[B, num_classes]``; ``features`` gives ``[B, 8 * width]``.

    Per-frame 3x3 convolutions at full resolution keep the small shapes' outlines; the deeper blocks
    are 3x3x3 so the features also see motion.
    """

    def __init__(self, num_classes: int = 6, width: int = 16):
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width}
        w = width
        self.blocks = nn.Sequential(
            _conv_block(3, w, (1, 3, 3)), nn.MaxPool3d((1, 2, 2)),
            _conv_block(w, 2 * w, (3, 3, 3)), nn.MaxPool3d(2),
            _conv_block(2 * w, 4 * w, (3, 3, 3)), nn.MaxPool3d(2),
            _conv_block(4 * w, 8 * w, (3, 3, 3)),
        )
        self.head = nn.Linear(8 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_block(c_in: int, c_out: int, kernel: tuple[int, int, int]) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, padding=pad, bias=False),
                         nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


def clips_to_input(clips: torch.Tensor, resolution: int) -> torch.Tensor:
    """``uint8 [B, T, H, W, 3]`` -> ``float [B, 3, T, resolution, resolution]`` in ``[-1, 1]``."""
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips [B, T, H, W, 3]; got {clips.dtype} {tuple(clips.shape)}")
    b, t, h, w, _ = clips.shape
    x = clips.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float() / 127.5 - 1
    if (h, w) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=True).clamp(-1, 1)
    return x.reshape(b, t, 3, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


@lru_cache(maxsize=16)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (memoised on path, mtime and size: weights are hashed once per process)."""
    stat = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


class ShapesEvaluator:
    """A loaded evaluator: the network, the settings it was trained for, and its weights' sha256."""

    def __init__(self, net: ShapesClassifier, settings: dict, sha256: str, device):
        self.net, self.settings, self.sha256 = net, settings, sha256
        self.device = torch.device(device)
        self.frames = int(settings["frames"])
        self.resolution = int(settings["resolution"])
        self.class_names = list(settings["class_names"])

    def check_compatible(self, *, frames: int, class_names: list[str]) -> None:
        """Raise ``ValueError`` unless clips of this length and these classes can be judged."""
        if frames != self.frames:
            raise ValueError(f"the shapes evaluator was trained on {self.frames}-frame clips; got "
                             f"frames={frames}. Use dataset.frames={self.frames} or metrics=[fvd,kvd]")
        unknown = [name for name in class_names if name not in self.class_names]
        if unknown:
            raise ValueError(f"the shapes evaluator knows the classes {self.class_names}; the dataset "
                             f"has {unknown}, which it was not trained on")

    def class_index(self, class_names: list[str]) -> torch.Tensor:
        """Map a dataset's class ids to the evaluator's class ids ``long [len(class_names)]``."""
        self.check_compatible(frames=self.frames, class_names=class_names)
        return torch.tensor([self.class_names.index(n) for n in class_names], dtype=torch.long)

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``float64 [B, D]`` and predicted evaluator class ids ``long [B]`` (on the CPU)."""
        if clips.ndim == 5 and clips.shape[1] != self.frames:
            self.check_compatible(frames=int(clips.shape[1]), class_names=[])
        x = clips_to_input(clips, self.resolution).to(self.device)
        feats = self.net.features(x)
        pred = self.net.head(feats).argmax(dim=1)
        return feats.double().cpu(), pred.cpu()


def read_settings(weights: str | os.PathLike) -> dict:
    path = settings_path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"shapes evaluator settings not found: {path} (written next to the "
                                "weights by scripts/train_shapes_evaluator.py)")
    settings = json.loads(path.read_text())
    missing = [k for k in ("frames", "resolution", "class_names", "architecture") if k not in settings]
    if missing:
        raise ValueError(f"{path} lacks the keys {missing}")
    return settings


def load_shapes_evaluator(path: str | os.PathLike | None = None,
                          device: str | torch.device = "cpu") -> ShapesEvaluator:
    """The shipped evaluator (or the one at ``path``), in eval mode on ``device``."""
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"shapes evaluator weights not found: {path} (run "
                                "scripts/train_shapes_evaluator.py to create them)")
    settings = read_settings(path)
    sha256 = file_sha256(path)
    if settings.get("sha256") not in (None, sha256):
        raise ValueError(f"{path} does not match its settings file (sha256 {sha256[:12]}… vs "
                         f"{settings['sha256'][:12]}…); retrain or restore both files together")
    net = ShapesClassifier(**settings["architecture"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return ShapesEvaluator(net.to(device).eval().requires_grad_(False), settings, sha256, device)
