"""cache: the settings hash, the COMPLETE marker, ClipStore reads, reuse and invalidation."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from videos import gradient_clip, shared_ucf_tree

from vidgan_cli import prepare
from vidgan_cli.data import cache as cache_lib
from vidgan_cli.data.video_folder import VideoFolderDataset
from vidgan_cli.video_io import write_video


@pytest.fixture
def npy(tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (7, 2, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "clips.npy", clips)
    return tmp_path / "clips.npy", clips


def test_clip_store_reads_what_numpy_wrote(npy):
    path, clips = npy
    store = cache_lib.ClipStore(path)
    assert len(store) == 7 and store.shape == clips.shape
    for order in ([0], [6], [2, 3, 4], [5, 1, 1, 0], [-1, 3], []):
        np.testing.assert_array_equal(store.take(order), clips[order])
    np.testing.assert_array_equal(store[4], clips[4])
    with pytest.raises(IndexError, match="out of range for a cache of 7 clips"):
        store.take([7])


def test_clip_store_pickles_without_its_descriptor(npy):
    path, clips = npy
    store = cache_lib.ClipStore(path)
    store.take([0])
    copy = pickle.loads(pickle.dumps(store))
    assert copy._fd is None and len(pickle.dumps(store)) < 1000
    np.testing.assert_array_equal(copy.take([3, 4]), clips[[3, 4]])


def test_clip_store_rejects_other_arrays_and_truncation(tmp_path, npy):
    np.save(tmp_path / "f.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"not a clip cache \(uint8 \[N, T, H, W, 3\]\)"):
        cache_lib.ClipStore(tmp_path / "f.npy")
    path, _ = npy
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(OSError, match="shorter than its header says"):
        cache_lib.ClipStore(path).take([6])


def test_settings_validation_names_the_key():
    with pytest.raises(ValueError, match="dataset.frames must be an integer >= 1"):
        cache_lib.ClipSettings(0, 1, 64, None)
    with pytest.raises(ValueError, match="clips_per_video must be an integer >= 1 or null"):
        cache_lib.ClipSettings(8, 1, 64, 0)


def test_hash_depends_on_every_setting_and_the_files():
    base = dict(settings=cache_lib.ClipSettings(8, 1, 32, None), files=[("a.mp4", 10, 1)], labels=[0],
                class_names=[])
    key = cache_lib.settings_hash(**base)
    variants = [dict(settings=cache_lib.ClipSettings(9, 1, 32, None)),
                dict(settings=cache_lib.ClipSettings(8, 2, 32, None)),
                dict(settings=cache_lib.ClipSettings(8, 1, 64, None)),
                dict(settings=cache_lib.ClipSettings(8, 1, 32, 3)),
                dict(files=[("a.mp4", 11, 1)]), dict(files=[("a.mp4", 10, 2)]), dict(files=[("b.mp4", 10, 1)]),
                dict(labels=[1]), dict(class_names=["x"])]
    keys = {cache_lib.settings_hash(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)
    assert cache_lib.settings_hash(**base) == key


def test_marker_decides_validity(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    np.save(folder / "clips.npy", np.zeros((1, 1, 2, 2, 3), np.uint8))
    assert not cache_lib.is_complete(folder, "k1")
    (folder / "COMPLETE").write_text("k2")
    assert not cache_lib.is_complete(folder, "k1")
    (folder / "COMPLETE").write_text("k1")
    assert cache_lib.is_complete(folder, "k1")
    assert cache_lib.open_cache(folder, "k1") is None  # no labels / meta: not a usable cache


@pytest.fixture(scope="session")
def ucf(tmp_path_factory):
    return shared_ucf_tree(tmp_path_factory)


def test_valid_cache_is_reused_without_decoding(ucf, tmp_path, monkeypatch):
    first = VideoFolderDataset(root=str(ucf[0]), frames=8, resolution=16, cache_dir=str(tmp_path))
    files = sorted(p.name for p in first.cache_path.iterdir())
    assert files == [".lock", "COMPLETE", "clips.npy", "labels.npy", "meta.json", "prepare_report.json"]
    monkeypatch.setattr(prepare, "build_cache", lambda *a, **k: pytest.fail("decoded again"))
    again = VideoFolderDataset(root=str(ucf[0]), frames=8, resolution=16, cache_dir=str(tmp_path))
    assert again.cache_path == first.cache_path and len(again) == len(first)


def test_changed_setting_or_file_makes_a_new_cache(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "a.mp4", gradient_clip(16, 16, 16), fps=8)
    kw = dict(root=str(root), frames=8, resolution=16)
    first = VideoFolderDataset(**kw)
    assert first.cache_path.parent == root / ".vidgan_cache"
    assert VideoFolderDataset(**{**kw, "frames": 4}).cache_path != first.cache_path
    write_video(root / "a.mp4", gradient_clip(24, 16, 16, seed=5), fps=8)  # replaced: size and mtime change
    second = VideoFolderDataset(**kw)
    assert second.cache_path != first.cache_path and len(second) == 3
    assert VideoFolderDataset(**kw, auto_prepare=False).cache_path == second.cache_path


def test_removed_marker_means_no_cache(tmp_path):
    root = tmp_path / "videos"
    write_video(root / "a.mp4", gradient_clip(8, 16, 16), fps=8)
    data = VideoFolderDataset(root=str(root), frames=8, resolution=16)
    (data.cache_path / "COMPLETE").unlink()
    with pytest.raises(FileNotFoundError, match="no prepared cache"):
        VideoFolderDataset(root=str(root), frames=8, resolution=16, auto_prepare=False)
