import numpy as np
import pytest
from conftest import compose_config

from vidgan_cli.config import ConfigError
from vidgan_cli.generate import generate, parse_condition
from vidgan_cli.train.trainer import Trainer
from vidgan_cli.video_io import probe

CLASSES = ["circle", "square", "triangle"]


def test_condition_by_name_id_list_and_all():
    assert parse_condition("square", CLASSES) == [1]
    assert parse_condition(2, CLASSES) == [2]
    assert parse_condition(["circle", 2], CLASSES) == [0, 2]
    assert parse_condition("all", CLASSES) == [0, 1, 2]
    assert parse_condition("all", []) == [None]


@pytest.mark.parametrize("condition", ["hexagon", 3, -1, True])
def test_unknown_condition_lists_the_checkpoint_classes(condition):
    with pytest.raises(ConfigError, match=r"0=circle, 1=square, 2=triangle"):
        parse_condition(condition, CLASSES)


def test_condition_on_unconditional_checkpoint_is_refused():
    with pytest.raises(ConfigError, match="unconditional"):
        parse_condition("circle", [])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import TINY
    run = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", TINY + ["trainer.max_steps=1", "trainer.save_every=1"])
    Trainer(cfg, run).fit()
    return run / "checkpoints" / "last.ckpt"


def test_generate_writes_playable_h264_clips_and_grid(checkpoint, tmp_path):
    cfg = compose_config("generate", [f"ckpt={checkpoint}", "condition=square", "num_videos=3",
                                      "fps=8", "device=cpu"])
    written = generate(cfg, tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["grid.gif", "grid.mp4", "grid.png", "square_000.mp4", "square_001.mp4",
                     "square_002.mp4"]
    frames, height, width, fps = probe(tmp_path / "square_000.mp4")
    assert (frames, height, width) == (8, 16, 16) and fps == pytest.approx(8)
    import av
    with av.open(str(tmp_path / "square_000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"


def test_grid_png_is_a_labelled_storyboard_one_clip_per_row(checkpoint, tmp_path):
    import imageio.v3 as iio

    from vidgan_cli.video_io import read_video
    cfg = compose_config("generate", [f"ckpt={checkpoint}", "condition=[circle,square]",
                                      "num_videos=2", "device=cpu"])
    generate(cfg, tmp_path)
    board = iio.imread(tmp_path / "grid.png")
    # 4 clips of 8 frames of 16x16, padding 2: 4 rows of 16 (+5 pads), 8 frames (+9 pads) + a margin
    assert board.shape[0] == 4 * 16 + 5 * 2
    margin = board.shape[1] - (8 * 16 + 9 * 2)
    assert margin > 0 and board[:, :margin].max() == 255  # the labels, in white
    clip = read_video(tmp_path / "square_001.mp4")  # the 4th row; mp4 is lossy, so compare loosely
    row, col = 2 + 3 * 18, margin + 2 + 5 * 18
    cell = board[row:row + 16, col:col + 16].astype(int)
    assert np.abs(cell - clip[5].astype(int)).mean() < 12


def test_generate_is_reproducible_for_a_seed(checkpoint, tmp_path):
    from vidgan_cli.video_io import read_video
    for name in ("a", "b"):
        cfg = compose_config("generate", [f"ckpt={checkpoint}", "condition=0", "num_videos=1",
                                          "grid=false", "device=cpu", "seed=5"])
        generate(cfg, tmp_path / name)
    a, b = (read_video(tmp_path / n / "circle_000.mp4") for n in ("a", "b"))
    assert (a == b).all()


def test_generate_never_overwrites(checkpoint, tmp_path):
    cfg = compose_config("generate", [f"ckpt={checkpoint}", "num_videos=1", "device=cpu"])
    generate(cfg, tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        generate(cfg, tmp_path)


def test_generate_errors(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="generate needs ckpt=PATH"):
        generate(compose_config("generate", []), tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        generate(compose_config("generate", [f"ckpt={tmp_path}/nope.ckpt"]), tmp_path)
    with pytest.raises(ConfigError, match="unknown condition 'hexagon'"):
        generate(compose_config("generate", [f"ckpt={checkpoint}", "condition=hexagon"]), tmp_path)
    with pytest.raises(ConfigError, match="frames=16: cgan3d cannot change clip length"):
        generate(compose_config("generate", [f"ckpt={checkpoint}", "frames=16", "device=cpu"]),
                 tmp_path)
