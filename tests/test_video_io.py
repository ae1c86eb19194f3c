"""video_io: MP4/GIF/PNG writers, readers with both backends, grids and conversions."""

from __future__ import annotations

import av
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from videos import ffmpeg_count_frames, ffmpeg_video, gradient_clip

from vidgan_cli import video_io

BACKENDS = ("pyav", "imageio")


def _stream_info(path):
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return ctx.name, ctx.pix_fmt, ctx.width, ctx.height


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_video_is_h264_yuv420p_with_every_frame(tmp_path, backend):
    clip = gradient_clip(frames=10, height=32, width=48)
    path = video_io.write_video(tmp_path / "clip.mp4", clip, fps=8, backend=backend)
    assert _stream_info(path) == ("h264", "yuv420p", 48, 32)
    assert ffmpeg_count_frames(path) == 10
    assert video_io.probe(path) == (10, 32, 48, 8.0)


@pytest.mark.parametrize("write_backend", BACKENDS)
@pytest.mark.parametrize("read_backend", BACKENDS)
def test_flat_colour_round_trip_is_close(tmp_path, write_backend, read_backend):
    clip = np.empty((6, 32, 32, 3), np.uint8)
    clip[:] = (200, 40, 90)
    path = video_io.write_video(tmp_path / "flat.mp4", clip, fps=4, backend=write_backend)
    back = video_io.read_video(path, backend=read_backend)
    assert back.shape == clip.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - clip).max() <= 3


def test_textured_round_trip_is_close(tmp_path):
    clip = gradient_clip(frames=8, height=64, width=64)
    back = video_io.read_video(video_io.write_video(tmp_path / "g.mp4", clip, fps=8))
    assert np.abs(back.astype(float) - clip).mean() < 6.0  # yuv420p halves the colour resolution


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_size_is_edge_padded_by_one_pixel_not_rescaled(tmp_path, backend):
    clip = gradient_clip(frames=4, height=33, width=47)
    path = video_io.write_video(tmp_path / "odd.mp4", clip, fps=8, backend=backend)
    assert _stream_info(path)[2:] == (48, 34)
    back = video_io.read_video(path).astype(int)
    assert back.shape == (4, 34, 48, 3)
    # the original pixels are where they were (not rescaled) and the pad repeats the edge
    assert np.abs(back[:, :33, :47] - clip).mean() < 6.0
    assert np.abs(back[:, 33, :47] - clip[:, 32]).mean() < 8.0
    assert np.abs(back[:, :33, 47] - clip[:, :, 46]).mean() < 8.0
    # a sharp grey edge shows any rescaling: white last row/column, black elsewhere
    edge = np.zeros((2, 33, 47, 3), np.uint8)
    edge[:, -1], edge[:, :, -1] = 255, 255
    back = video_io.read_video(video_io.write_video(tmp_path / "e.mp4", edge, fps=8, backend=backend))
    assert (back[:, :31, :45] < 20).all()
    assert (back[:, 32:, :45] > 235).all() and (back[:, :31, 46:] > 235).all()


def test_pad_to_even_leaves_even_sizes_alone():
    clip = np.zeros((2, 4, 6, 3), np.uint8)
    assert video_io.pad_to_even(clip) is clip
    assert video_io.pad_to_even(np.zeros((2, 5, 7, 3), np.uint8)).shape == (2, 6, 8, 3)


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    clip = gradient_clip(frames=3)
    video_io.write_video(tmp_path / "a.mp4", clip, fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
    assert (tmp_path / "a.mp4").stat().st_mode & 0o777 != 0o600

    def broken(*args, **kwargs):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(video_io, "_encode_pyav", broken)
    monkeypatch.setattr(video_io, "_encode_imageio", broken)
    before = (tmp_path / "a.mp4").read_bytes()
    with pytest.raises(RuntimeError, match="encoder died"):
        video_io.write_video(tmp_path / "a.mp4", clip[:1], fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]
    assert (tmp_path / "a.mp4").read_bytes() == before


def test_gif_loops_with_duration_from_fps(tmp_path):
    clip = gradient_clip(frames=5, height=20, width=30)
    path = video_io.write_clip(tmp_path / "c.gif", clip, fps=10)
    frames = iio.imread(path, index=None)
    assert frames.shape[1:3] == (20, 30) and frames.shape[0] == 5
    meta = iio.immeta(path, index=0)
    assert meta["loop"] == 0 and meta["duration"] == 100


def test_png_strip_puts_frames_side_by_side(tmp_path):
    clip = gradient_clip(frames=4, height=10, width=12)
    image = iio.imread(video_io.write_clip(tmp_path / "c.png", clip, fps=8))
    assert image.shape == (10, 48, 3)
    np.testing.assert_array_equal(image[:, 24:36], clip[2])


def test_png_strip_of_several_clips_is_rows_by_frames(tmp_path):
    clips = np.stack([gradient_clip(frames=3, height=8, width=8, seed=s) for s in range(2)])
    image = iio.imread(video_io.write_png_strip(tmp_path / "s.png", clips, padding=1))
    assert image.shape == (2 * 8 + 1, 3 * 8 + 2, 3)
    np.testing.assert_array_equal(image[9:17, 18:26], clips[1, 2])


def test_unknown_suffix_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match=r"\.avi.*allowed: \.mp4, \.gif, \.png"):
        video_io.write_clip(tmp_path / "c.avi", gradient_clip(), fps=8)


@pytest.mark.parametrize("bad, err", [
    (np.zeros((4, 8, 8, 3), np.float32), TypeError),
    (np.zeros((8, 8, 3), np.uint8), ValueError),
    (np.zeros((4, 8, 8, 1), np.uint8), ValueError),
    (np.zeros((0, 8, 8, 3), np.uint8), ValueError),
])
def test_bad_frames_are_rejected(tmp_path, bad, err):
    with pytest.raises(err, match=r"uint8 \[T, H, W, 3\]"):
        video_io.write_video(tmp_path / "x.mp4", bad, fps=8)


def test_bad_fps_and_backend_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="fps must be a positive integer"):
        video_io.write_video(tmp_path / "x.mp4", gradient_clip(), fps=0)
    with pytest.raises(ValueError, match="auto, pyav, imageio"):
        video_io.write_video(tmp_path / "x.mp4", gradient_clip(), fps=8, backend="opencv")


def test_grid_shape_arithmetic_and_placement():
    videos = np.stack([np.full((3, 10, 12, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = video_io.make_grid(videos, nrow=2, padding=2)
    assert grid.shape == (3, 3 * 10 + 4 * 2, 2 * 12 + 3 * 2, 3)
    r, c = divmod(3, 2)
    top, left = 2 + r * 12, 2 + c * 14
    assert (grid[:, top:top + 10, left:left + 12] == 40).all()
    assert (grid[:, 0:2] == 0).all()  # padding
    assert (grid[:, 26:36, 16:28] == 0).all()  # the empty sixth cell
    assert video_io.make_grid(videos, nrow=8, padding=0).shape == (3, 10, 60, 3)


def test_grid_labels_add_a_left_margin_with_white_text():
    videos = np.full((4, 2, 32, 32, 3), 100, np.uint8)
    plain = video_io.make_grid(videos, nrow=2)
    labelled = video_io.make_grid(videos, nrow=2, labels=["circle", "sq"])
    margin = labelled.shape[2] - plain.shape[2]
    assert margin > 0 and labelled.shape[:2] == plain.shape[:2]
    np.testing.assert_array_equal(labelled[:, :, margin:], plain)
    first_row = labelled[:, 2:34, :margin]
    second_row = labelled[:, 36:68, :margin]
    assert (first_row == 255).sum() > (second_row == 255).sum() > 0
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        video_io.make_grid(videos, nrow=2, labels=["a", "b", "c"])


def test_to_uint8_inverts_the_trainer_scaling():
    clips = torch.randint(0, 256, (2, 4, 6, 8, 3), dtype=torch.uint8)
    video = clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    out = video_io.to_uint8(video)
    assert out.dtype == np.uint8 and out.shape == (2, 4, 6, 8, 3)
    np.testing.assert_array_equal(out, clips.numpy())
    np.testing.assert_array_equal(video_io.to_uint8(np.full((1, 3, 1, 1, 1), 5.0))[0, 0, 0, 0], [255] * 3)
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        video_io.to_uint8(torch.zeros(2, 4, 3, 8, 8))


def test_to_uint8_rounds_tensors_and_arrays_alike():
    """Evaluation quantises tensors (on their device), generate's MP4s arrays: the same uint8 values,
    halves rounded to even, bf16 included."""
    halves = (torch.arange(255, dtype=torch.float64) + 0.5) / 127.5 - 1  # k + 0.5 after scaling
    video = torch.cat([halves, torch.linspace(-1.2, 1.2, 255, dtype=torch.float64)]).view(2, 3, 1, 1, 85)
    from_tensor, from_array = video_io.to_uint8(video), video_io.to_uint8(video.numpy())
    np.testing.assert_array_equal(from_tensor, from_array)
    np.testing.assert_array_equal(video_io.to_uint8(video.to(torch.bfloat16)),
                                  video_io.to_uint8(video.to(torch.bfloat16).float().numpy()))
    assert from_tensor.flags.c_contiguous


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".mkv", "libx264"), (".gif", None)])
def test_read_other_containers(tmp_path, backend, suffix, codec):
    path = ffmpeg_video(tmp_path / f"v{suffix}", size=(40, 30), frames=7, codec=codec or "libx264")
    frames = video_io.read_video(path, backend=backend)
    assert frames.shape == (7, 30, 40, 3)
    assert sum(1 for _ in video_io.iter_frames(path, backend=backend)) == 7
    assert video_io.probe(path)[:3] == (7, 30, 40)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        video_io.read_video(tmp_path / "missing.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own decoder error
        video_io.read_video(fake)


def test_auto_falls_back_to_imageio_without_pyav(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # "import av" now raises ImportError
    assert video_io.resolve_backend("auto") == "imageio"
    with pytest.raises(ImportError, match="pip install av"):
        video_io.resolve_backend("pyav")
    path = video_io.write_video(tmp_path / "f.mp4", gradient_clip(frames=3), fps=8)
    assert video_io.read_video(path).shape == (3, 32, 32, 3)
    assert video_io.probe(path)[:3] == (3, 32, 32)
