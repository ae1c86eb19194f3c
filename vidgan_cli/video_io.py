"""Read and write clips: MP4 (H.264, yuv420p), GIF and PNG frame strips; tile clips into grids.

Pure functions on ``uint8 [T, H, W, 3]`` numpy arrays (``[N, T, H, W, 3]`` for several clips).

Two backends encode and decode MP4: PyAV (``av``, in-process, the default when it is importable: about
2.5x faster to write and 5x faster to read small clips than a subprocess) and imageio-ffmpeg (the
ffmpeg binary that the ``imageio-ffmpeg`` wheel ships, driven through a pipe).  ``backend="auto"``
picks PyAV when it is installed, otherwise imageio-ffmpeg.

Every writer is atomic: it writes a temp file in the destination folder and ``os.replace``s it, so a
crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav", "imageio")
CLIP_SUFFIXES = (".mp4", ".gif", ".png")

# A 3x5 bitmap font for grid labels: each glyph is 15 bits, five rows of three, top row first.
# Lower case is drawn as upper case; characters not listed are drawn as "?".
_FONT_3X5 = {
    "A": 0b010101111101101, "B": 0b110101110101110, "C": 0b011100100100011, "D": 0b110101101101110,
    "E": 0b111100110100111, "F": 0b111100110100100, "G": 0b011100101101011, "H": 0b101101111101101,
    "I": 0b111010010010111, "J": 0b001001001101010, "K": 0b101101110101101, "L": 0b100100100100111,
    "M": 0b101111111101101, "N": 0b110101101101101, "O": 0b010101101101010, "P": 0b110101110100100,
    "Q": 0b010101101110011, "R": 0b110101110101101, "S": 0b011100010001110, "T": 0b111010010010010,
    "U": 0b101101101101111, "V": 0b101101101101010, "W": 0b101101111111101, "X": 0b101101010101101,
    "Y": 0b101101010010010, "Z": 0b111001010100111, "0": 0b111101101101111, "1": 0b010110010010111,
    "2": 0b110001010100111, "3": 0b110001010001110, "4": 0b101101111001001, "5": 0b111100110001110,
    "6": 0b011100111101111, "7": 0b111001010010010, "8": 0b111101111101111, "9": 0b111101111001110,
    " ": 0, "-": 0b000000111000000, "_": 0b000000000000111, ".": 0b000000000000010,
    ":": 0b000010000010000, "/": 0b001001010100100, "=": 0b000111000111000, "+": 0b000010111010000,
    "(": 0b010100100100010, ")": 0b010001001001010, "?": 0b110001010000010, "#": 0b101111101111101,
    ",": 0b000000000010100,
}
_MAX_LABEL_CHARS = 16
# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# --------------------------------------------------------------------------------------------------
# checks and helpers


def _check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8 [T, H, W, 3]; got dtype {frames.dtype} "
                        "(convert float videos in [-1, 1] with video_io.to_uint8)")
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"{what} must be uint8 [T, H, W, 3] with T, H, W >= 1; got shape {frames.shape}")
    return frames


def _check_fps(fps) -> None:
    if not (isinstance(fps, (int, np.integer)) and fps > 0):
        raise ValueError(f"fps must be a positive integer; got {fps!r}")


def resolve_backend(backend: str = "auto") -> str:
    """``"pyav"`` or ``"imageio"``: the backend that ``backend`` names (``auto``: PyAV when installed)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "imageio":
        return backend
    try:
        import av  # noqa: F401
    except ImportError:
        if backend == "pyav":
            raise ImportError("backend='pyav' needs PyAV: pip install av (or use backend='imageio')") from None
        return "imageio"
    return "pyav"


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row and/or column so height and width are even (yuv420p needs it); <= 1 px."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` (same suffix, so encoders pick the format) renamed onto it at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------------
# writing


def _encode_pyav(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)


def _encode_imageio(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    import imageio_ffmpeg

    # macro_block_size=1: the default (16) makes ffmpeg rescale every frame to a multiple of 16.
    writer = imageio_ffmpeg.write_frames(
        str(path), (frames.shape[2], frames.shape[1]), fps=int(fps), codec="libx264",
        pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=None, macro_block_size=1,
        output_params=["-crf", str(crf)], ffmpeg_log_level="error")
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int, *, backend: str = "auto",
                crf: int = 18) -> Path:
    """Write ``frames`` (uint8 ``[T, H, W, 3]``) as an H.264 MP4 in yuv420p at ``fps``; returns the path.

    yuv420p stores colour at half resolution, so the height and width must be even: an odd height or
    width is padded by exactly one pixel (the last row/column repeated) at the bottom/right.  Frames
    are never rescaled.  ``crf`` is x264's constant rate factor (0 lossless .. 51 worst; 18 looks
    lossless for these clips).  The file appears atomically (temp file + ``os.replace``).
    """
    path = Path(path)
    frames = pad_to_even(_check_frames(frames))
    _check_fps(fps)
    encode = _encode_pyav if resolve_backend(backend) == "pyav" else _encode_imageio
    with _atomic_path(path) as tmp:
        encode(tmp, frames, fps, crf)
    return path


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: int) -> Path:
    """Write an animated GIF that loops forever, each frame shown ``1/fps`` s (GIF rounds to 10 ms).

    GIF stores a 256-colour palette per frame, and identical consecutive frames may be merged into
    one longer frame by the encoder (Pillow).
    """
    import imageio.v3 as iio

    path = Path(path)
    frames = _check_frames(frames)
    _check_fps(fps)
    with _atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


def frame_strip(frames: np.ndarray, padding: int = 0, labels: list[str] | None = None) -> np.ndarray:
    """One image of the frames side by side: ``[T, H, W, 3]`` -> ``[H, T*W + (T-1)*padding, 3]``.

    Several clips ``[N, T, H, W, 3]`` give an N-rows x T-columns image (one clip per row, a storyboard);
    ``labels`` (one per clip) are written in a left margin as in :func:`make_grid`.
    """
    frames = np.asarray(frames)
    clips = frames[None] if frames.ndim == 4 else frames
    if clips.ndim != 5:
        raise ValueError(f"frame_strip needs [T, H, W, 3] or [N, T, H, W, 3]; got shape {frames.shape}")
    # Each frame becomes one "clip" of one frame, tiled T per row.
    n, t = clips.shape[:2]
    tiles = clips.reshape(n * t, 1, *clips.shape[2:])
    grid = make_grid(tiles, nrow=t, padding=padding, labels=labels)[0]
    if padding and not labels:  # make_grid pads the outside too; a strip is padded only between frames
        grid = grid[padding:-padding, padding:-padding]
    return grid


def write_png_strip(path: str | os.PathLike, frames: np.ndarray, padding: int = 0,
                    labels: list[str] | None = None) -> Path:
    """Write :func:`frame_strip` of ``frames`` (``[T, H, W, 3]`` or ``[N, T, H, W, 3]``) as a PNG.

    zlib level 1: about 5x faster than the default level for a few percent more bytes.
    """
    import imageio.v3 as iio

    path = Path(path)
    frames = np.asarray(frames)
    _check_frames(frames if frames.ndim == 4 else frames.reshape(-1, *frames.shape[2:]))
    image = frame_strip(frames, padding, labels)
    with _atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png", compress_level=1)
    return path


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: int, *, backend: str = "auto") -> Path:
    """Write ``frames`` as ``.mp4`` (:func:`write_video`), ``.gif`` or ``.png`` (a frame strip) by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_video(path, frames, fps, backend=backend)
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix == ".png":
        return write_png_strip(path, frames)
    raise ValueError(f"cannot write {str(path)!r}: unknown suffix {suffix!r}; "
                     f"allowed: {', '.join(CLIP_SUFFIXES)}")


# --------------------------------------------------------------------------------------------------
# grids


def to_uint8(video) -> np.ndarray:
    """Float ``[B, 3, T, H, W]`` in ``[-1, 1]`` (torch or numpy) -> ``np.uint8 [B, T, H, W, 3]``.

    The exact inverse of the trainer's ``x / 127.5 - 1``; values outside ``[-1, 1]`` are clipped. A
    tensor is quantised where it is (on a GPU, only the uint8 clips cross to the host).
    """
    tensor = hasattr(video, "detach")  # torch, without importing it here
    if not tensor:
        video = np.asarray(video, dtype=np.float32)
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"to_uint8 needs a float video [B, 3, T, H, W]; got shape {tuple(video.shape)}")
    if tensor:  # torch's round() is half-to-even, like np.rint
        scaled = video.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().byte()
        return scaled.permute(0, 2, 3, 4, 1).contiguous().cpu().numpy()
    scaled = np.rint((np.clip(video, -1.0, 1.0) + 1.0) * 127.5)
    return np.ascontiguousarray(scaled.astype(np.uint8).transpose(0, 2, 3, 4, 1))


def _render_text(text: str, scale: int) -> np.ndarray:
    """A bool mask ``[5*scale, 4*len*scale]`` of ``text`` in the built-in 3x5 font (1 px spacing)."""
    text = text.upper()
    if len(text) > _MAX_LABEL_CHARS:
        text = text[: _MAX_LABEL_CHARS - 1] + "."
    mask = np.zeros((5, 4 * max(len(text), 1)), dtype=bool)
    for i, char in enumerate(text):
        bits = _FONT_3X5.get(char, _FONT_3X5["?"])
        glyph = np.array([(bits >> (14 - k)) & 1 for k in range(15)], dtype=bool).reshape(5, 3)
        mask[:, 4 * i: 4 * i + 3] = glyph
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def _label_margin(labels: list[str], height: int, padding: int) -> tuple[list[np.ndarray], int]:
    scale = max(1, min(4, height // 24))
    masks = [_render_text(str(label), scale) for label in labels]
    width = max(m.shape[1] for m in masks) + 2 * max(padding, scale)
    return masks, width


def make_grid(videos: np.ndarray, nrow: int, padding: int = 2, labels: list[str] | None = None,
              pad_value: int = 0) -> np.ndarray:
    """Tile clips ``uint8 [N, T, H, W, 3]`` into one clip ``uint8 [T, H', W', 3]``, ``nrow`` per row.

    ``H' = rows*H + (rows+1)*padding`` and ``W' = margin + nrow*W + (nrow+1)*padding`` with
    ``rows = ceil(N / nrow)``.  ``labels`` (one per row) are written in white in a left margin with a
    built-in bitmap font (``margin`` is 0 without labels); empty cells are ``pad_value``.
    """
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or 0 in videos.shape:
        raise ValueError(f"make_grid needs uint8 [N, T, H, W, 3]; got {videos.dtype} {videos.shape}")
    if nrow < 1:
        raise ValueError(f"make_grid needs nrow >= 1; got {nrow}")
    if padding < 0:
        raise ValueError(f"make_grid needs padding >= 0; got {padding}")
    n, t, h, w, _ = videos.shape
    ncol, rows = min(nrow, n), -(-n // nrow)
    if labels is not None and len(labels) != rows:
        raise ValueError(f"make_grid got {len(labels)} labels for {rows} rows (N={n}, nrow={nrow})")
    masks, margin = _label_margin(labels, h, padding) if labels else ([], 0)
    grid = np.full((t, rows * h + (rows + 1) * padding, margin + ncol * w + (ncol + 1) * padding, 3),
                   pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), margin + padding + c * (w + padding)
        grid[:, top: top + h, left: left + w] = videos[i]
    for r, mask in enumerate(masks):
        top = padding + r * (h + padding) + max(0, (h - mask.shape[0]) // 2)
        mh, mw = min(mask.shape[0], h), mask.shape[1]
        left = (margin - mw) // 2
        grid[:, top: top + mh, left: left + mw][:, mask[:mh]] = 255
    return grid


# --------------------------------------------------------------------------------------------------
# reading


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {str(path)!r}")


def _iter_pyav(path: Path, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    import av
    from av.video.reformatter import VideoReformatter

    width, height = size or (None, None)
    reformatter = VideoReformatter()  # one scaler context for the whole file, not one per frame
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{str(path)!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb = reformatter.reformat(frame, width, height, format="rgb24", interpolation="AREA")
            yield rgb.to_ndarray()


class _DropResizeNotice(logging.Filter):
    """imageio-ffmpeg warns whenever output and source sizes differ; here that is the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropResizeNotice())


def _iter_imageio(path: Path, size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    # passthrough: one output frame per decoded frame, as PyAV gives (no cfr duplication/dropping).
    params = ["-fps_mode", "passthrough"]
    if size:
        params += ["-vf", f"scale={size[0]}:{size[1]}:flags=area"]
    reader = imageio_ffmpeg.read_frames(str(path), output_params=params)
    try:
        meta = next(reader)
        width, height = size or meta["size"]
        for data in reader:
            yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def iter_frames(path: str | os.PathLike, *, size: tuple[int, int] | None = None,
                backend: str = "auto") -> Iterator[np.ndarray]:
    """Yield the frames of a video file one by one as ``uint8 [H, W, 3]`` RGB (memory stays flat).

    ``size=(width, height)`` scales every frame while decoding (area filter: no aliasing when
    shrinking), which costs far less than converting the full-size frame to RGB first.
    """
    path = Path(path)
    _check_readable(path)
    if size is not None and not (len(size) == 2 and min(size) >= 1):
        raise ValueError(f"size must be (width, height) >= 1; got {size!r}")
    if resolve_backend(backend) == "pyav":
        return _iter_pyav(path, size)
    return _iter_imageio(path, size)


def read_video(path: str | os.PathLike, *, backend: str = "auto") -> np.ndarray:
    """All frames of a video file as ``uint8 [T, H, W, 3]`` RGB."""
    frames = list(iter_frames(path, backend=backend))
    if not frames:
        raise ValueError(f"{str(path)!r} has no decodable frames")
    return np.stack(frames)


def probe(path: str | os.PathLike) -> tuple[int, int, int, float]:
    """``(num_frames, height, width, fps)`` of a video file, without decoding pixels where possible.

    The frame count comes from the container header when it has one, else from counting packets.
    """
    path = Path(path)
    _check_readable(path)
    if resolve_backend("auto") == "imageio":
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        num, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
        return int(num), int(meta["size"][1]), int(meta["size"][0]), float(meta["fps"])
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{str(path)!r} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        num = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        return int(num), int(stream.codec_context.height), int(stream.codec_context.width), float(rate or 0)
