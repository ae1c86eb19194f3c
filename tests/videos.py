"""Helpers that make small real video files for tests (with the ffmpeg that imageio-ffmpeg ships)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

# lavfi sources that give moving, textured content at any size
LAVFI_SOURCES = ("testsrc2", "mandelbrot", "life", "testsrc", "rgbtestsrc", "smptebars")


def ffmpeg_video(path: Path, *, source: str = "testsrc2", size: tuple[int, int] = (64, 48),
                 frames: int = 24, fps: int = 12, codec: str = "libx264") -> Path:
    """Render ``frames`` frames of lavfi ``source`` at ``size`` (width, height) into ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    extra = {"libx264": ["-pix_fmt", "yuv420p", "-preset", "ultrafast"], "mpeg4": ["-q:v", "5"]}
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi",
           "-i", f"{source}=size={w}x{h}:rate={fps}", "-frames:v", str(frames)]
    if path.suffix != ".gif":
        cmd += ["-c:v", codec, *extra.get(codec, [])]
    subprocess.run([*cmd, str(path)], check=True, capture_output=True)
    return path


def ffmpeg_count_frames(path: Path) -> int:
    """Frames in ``path`` as counted by decoding it fully with the ffmpeg binary (no ffprobe needed)."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1",
                          "-"], check=True, capture_output=True, text=True).stdout
    counts = [int(line.split("=")[1]) for line in out.splitlines() if line.startswith("frame=")]
    return counts[-1]


def gradient_clip(frames: int = 8, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth moving colour gradient ``uint8 [T, H, W, 3]`` (compresses well, changes every frame)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    phase = rng.uniform(0, 2 * np.pi, 3)
    channels = [127 + 100 * np.sin((x + 2 * t) / 9 + phase[c] + y / 13) for c in range(3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


# name -> (lavfi source or None for the project's writer, size (w, h), frames, codec)
UCF_TREE = {
    "ClassA/v_a0.mp4": ("testsrc2", (64, 48), 24, "libx264"),
    "ClassA/v_a1.avi": ("mandelbrot", (64, 48), 32, "mpeg4"),
    "ClassB/v_b0.mkv": ("life", (48, 64), 24, "libx264"),
    "ClassB/sub/v_b1.mp4": (None, (32, 32), 20, None),
    "ClassC/v_c0.gif": ("testsrc2", (40, 30), 16, None),
    "ClassC/v_c1.mov": ("mandelbrot", (64, 48), 24, "libx264"),
    "ClassC/v_c2.webm": ("testsrc", (64, 48), 16, "libvpx-vp9"),
}


def make_ucf_tree(root: Path) -> dict[str, int]:
    """A small UCF-101-style folder (3 classes, every container kind); returns frames per file."""
    from vidgan_cli.video_io import write_video

    for rel, (source, size, frames, codec) in UCF_TREE.items():
        if source is None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(root / rel, gradient_clip(frames, size[1], size[0], seed=1), fps=10)
        else:
            ffmpeg_video(root / rel, source=source, size=size, frames=frames, codec=codec or "libx264")
    (root / "ClassA" / "notes.txt").write_text("not a video")
    return {rel: spec[2] for rel, spec in UCF_TREE.items()}


def make_flat_folder(root: Path, count: int = 2, frames: int = 16) -> list[Path]:
    """Videos directly inside ``root`` (an unconditional dataset)."""
    sources = LAVFI_SOURCES
    return [ffmpeg_video(root / f"clip{i}.mp4", source=sources[i % len(sources)], frames=frames)
            for i in range(count)]


_SHARED: dict[str, tuple[Path, dict[str, int]]] = {}


def shared_ucf_tree(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One read-only UCF-style tree per test session, whichever test module asks first.

    Tests must not write into it: give datasets ``cache_dir=tmp_path``.
    """
    if "ucf" not in _SHARED:
        root = tmp_path_factory.mktemp("ucf")
        _SHARED["ucf"] = (root, make_ucf_tree(root))
    return _SHARED["ucf"]
