"""video_folder: scanning, classes, splits and the dataset read from its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from videos import gradient_clip, make_flat_folder, shared_ucf_tree

from vidgan_cli.data import collate_batched
from vidgan_cli.data.video_folder import VideoFolderDataset, scan_videos
from vidgan_cli.video_io import write_video

pytestmark = pytest.mark.slow  # real videos


@pytest.fixture(scope="session")
def ucf(tmp_path_factory):
    return shared_ucf_tree(tmp_path_factory)


def _dataset(root, tmp_path, **kw):
    kw.setdefault("frames", 8)
    kw.setdefault("resolution", 32)
    return VideoFolderDataset(root=str(root), cache_dir=str(tmp_path / "cache"), **kw)


def test_scan_finds_every_container_and_sorted_classes(ucf):
    root, frames = ucf
    source = scan_videos(root)
    assert source.files == sorted(frames)
    assert source.class_names == ["ClassA", "ClassB", "ClassC"]
    assert source.labels == [["ClassA", "ClassB", "ClassC"].index(f.split("/")[0]) for f in source.files]


def test_clips_shapes_counts_labels_and_values(ucf, tmp_path):
    root, frames = ucf
    data = _dataset(root, tmp_path)
    per_file = {rel: n // 8 for rel, n in frames.items()}
    assert len(data) == sum(per_file.values())
    assert data.class_names == ["ClassA", "ClassB", "ClassC"] and data.num_classes == 3
    assert (data.frames, data.resolution) == (8, 32)
    clip, label = data[0]
    assert clip.dtype == torch.uint8 and clip.shape == (8, 32, 32, 3)
    assert label.dtype == torch.int64 and label.ndim == 0
    expected = [source_label for rel, n in sorted(per_file.items())
                for source_label in [["ClassA", "ClassB", "ClassC"].index(rel.split("/")[0])] * n]
    assert data.labels.tolist() == expected
    every = data.__getitems__(list(range(len(data))))[0]
    assert every.float().std() > 20 and every.max() > 200  # real, varied content


def test_getitems_matches_getitem(ucf, tmp_path):
    data = _dataset(ucf[0], tmp_path)
    order = [5, 0, 1, 2, 9, 3]
    clips, labels = data.__getitems__(order)
    assert clips.shape == (6, 8, 32, 32, 3) and labels.shape == (6,)
    for k, i in enumerate(order):
        torch.testing.assert_close(clips[k], data[i][0])
        assert labels[k] == data[i][1]


def test_clips_hold_the_source_frames_at_their_starts(tmp_path):
    source = gradient_clip(frames=30, height=32, width=32, seed=3)
    write_video(tmp_path / "v" / "a.mp4", source, fps=10)
    data = VideoFolderDataset(root=str(tmp_path / "v"), frames=5, resolution=32, frame_stride=2,
                              clips_per_video=None)
    assert len(data) == 3  # 30 frames, windows of 5 x 2
    for c in range(3):
        want = source[c * 10: c * 10 + 10: 2].astype(float)
        assert np.abs(data[c][0].numpy() - want).mean() < 6  # (yuv420p)


def test_short_side_scaled_and_centre_cropped(tmp_path):
    source = np.zeros((8, 32, 64, 3), np.uint8)
    source[:, :, 16:48] = 255  # a white band in the middle half of a 2:1 frame
    write_video(tmp_path / "w" / "a.mp4", source, fps=8)
    clip = VideoFolderDataset(root=str(tmp_path / "w"), frames=8, resolution=16)[0][0].numpy()
    assert clip.shape == (8, 16, 16, 3)
    assert (clip[:, :, 1:15] > 200).all()  # the crop is the band: scaled 32 -> 16, centre 16 of 32


def test_clips_per_video_and_stride(ucf, tmp_path):
    root, frames = ucf
    data = _dataset(root, tmp_path, clips_per_video=2)
    assert len(data) == sum(min(2, n // 8) for n in frames.values())
    starts = [m["start"] for m in _manifest(data) if m["source"] == "ClassA/v_a1.avi"]
    assert starts == [0, 24]  # spread over 32 frames: first and last window
    strided = _dataset(root, tmp_path, frame_stride=3)  # clips span 24 frames
    assert len(strided) == sum(n // 24 for n in frames.values())


def _manifest(data):
    import json
    return json.loads((data.cache_path / "meta.json").read_text())["manifest"]


def test_flat_folder_is_unconditional(tmp_path):
    make_flat_folder(tmp_path / "flat", count=2, frames=16)
    data = _dataset(tmp_path / "flat", tmp_path)
    assert data.class_names == [] and data.num_classes == 0
    assert len(data) == 4 and data.labels.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="num_classes=3 but .* no class folders"):
        _dataset(tmp_path / "flat", tmp_path, num_classes=3)
    with pytest.raises(ValueError, match="needs class subfolders"):
        _dataset(tmp_path / "flat", tmp_path, classes=["a"])


def test_num_classes_must_match_or_be_zero(ucf, tmp_path):
    with pytest.raises(ValueError, match=r"num_classes=5 but .* 3 class folders \(ClassA, ClassB, ClassC\)"):
        _dataset(ucf[0], tmp_path, num_classes=5)
    assert _dataset(ucf[0], tmp_path, num_classes=3).num_classes == 3
    plain = _dataset(ucf[0], tmp_path, num_classes=0)
    assert plain.class_names == [] and int(plain.labels.max()) == 0


def test_classes_restrict_and_relabel(ucf, tmp_path):
    data = _dataset(ucf[0], tmp_path, classes=["ClassC", "ClassA"])
    assert data.class_names == ["ClassA", "ClassC"]
    assert set(data.labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match=r"\['Nope'\] not found .* classes there: ClassA, ClassB, ClassC"):
        _dataset(ucf[0], tmp_path, classes=["Nope", "ClassA"])


def test_split_file_filters_videos(ucf, tmp_path):
    root, _ = ucf
    split = tmp_path / "trainlist01.txt"
    split.write_text("ClassA/v_a0.mp4 1\nClassB/sub/v_b1.mp4 2\n\n")
    data = _dataset(root, tmp_path, split_file=str(split))
    assert {m["source"] for m in _manifest(data)} == {"ClassA/v_a0.mp4", "ClassB/sub/v_b1.mp4"}
    assert data.class_names == ["ClassA", "ClassB", "ClassC"]  # ids agree between train and test lists
    assert data.labels.tolist() == [0, 0, 0, 1, 1]


def test_split_file_errors(ucf, tmp_path):
    root, _ = ucf
    split = tmp_path / "testlist01.txt"
    split.write_text("ClassA/v_a0.mp4\nClassA/v_missing.avi\n")
    with pytest.raises(FileNotFoundError, match=r"lists 1 video\(s\) that are not under .*v_missing.avi"):
        _dataset(root, tmp_path, split_file=str(split))
    with pytest.raises(FileNotFoundError, match="split_file='nowhere.txt' does not exist"):
        _dataset(root, tmp_path, split_file="nowhere.txt")


def test_bad_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _dataset(tmp_path / "absent", tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no videos under .* \.mp4, \.avi, \.mov, \.mkv, \.webm, \.gif"):
        _dataset(tmp_path / "empty", tmp_path)
    make_flat_folder(tmp_path / "mixed", count=1, frames=8)
    make_flat_folder(tmp_path / "mixed" / "Cls", count=1, frames=8)
    with pytest.raises(ValueError, match="both directly inside it"):
        _dataset(tmp_path / "mixed", tmp_path)
    with pytest.raises(ValueError, match="dataset.root is required"):
        VideoFolderDataset(root="???")


def test_no_cache_without_auto_prepare_says_run_prepare(ucf, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run `vidgan prepare dataset=video_folder dataset.root="):
        _dataset(ucf[0], tmp_path, auto_prepare=False)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches(ucf, tmp_path, workers):
    data = _dataset(ucf[0], tmp_path)
    loader = DataLoader(data, batch_size=4, shuffle=True, num_workers=workers, collate_fn=collate_batched,
                        generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert sum(len(b[1]) for b in batches) == len(data)
    clips, labels = batches[0]
    assert clips.shape == (4, 8, 32, 32, 3) and clips.dtype == torch.uint8 and labels.dtype == torch.int64
