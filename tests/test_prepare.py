"""prepare: parallel decoding into the cache, resume, bad files, the Hydra app and its errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from videos import ffmpeg_video, gradient_clip, shared_ucf_tree

from vidgan_cli import prepare
from vidgan_cli.data import cache as cache_lib
from vidgan_cli.data.video_folder import VideoFolderDataset
from vidgan_cli.video_io import write_video

pytestmark = pytest.mark.slow  # real videos


@pytest.fixture(scope="session")
def ucf(tmp_path_factory):
    return shared_ucf_tree(tmp_path_factory)


def _compose(*overrides):
    with initialize_config_module(config_module="vidgan_cli.conf", version_base="1.3"):
        return compose("prepare", overrides=list(overrides))


def test_clip_starts():
    s = cache_lib.ClipSettings(frames=4, frame_stride=2, resolution=8, clips_per_video=None)
    assert prepare.clip_starts(7, s) == [] and prepare.clip_starts(8, s) == [0]
    assert prepare.clip_starts(25, s) == [0, 8, 16]
    three = cache_lib.ClipSettings(frames=4, frame_stride=1, resolution=8, clips_per_video=3)
    assert prepare.clip_starts(20, three) == [0, 8, 16]
    assert prepare.clip_starts(5, three) == [0, 1]  # fewer distinct windows than asked


def test_scaled_size_keeps_aspect_with_short_side_resolution():
    assert prepare.scaled_size(320, 240, 64) == (85, 64)
    assert prepare.scaled_size(240, 320, 64) == (64, 85)
    assert prepare.scaled_size(64, 64, 32) == (32, 32)


def test_prepare_through_the_composed_config_with_workers(ucf, tmp_path):
    cfg = _compose(f"dataset.root={ucf[0]}", f"dataset.cache_dir={tmp_path}", "dataset.frames=8",
                   "dataset.resolution=16", "workers=2")
    folder = prepare.run(cfg)
    assert cache_lib.is_complete(folder, folder.name)
    meta = json.loads((folder / "meta.json").read_text())
    report = json.loads((folder / "prepare_report.json").read_text())
    assert meta["class_names"] == ["ClassA", "ClassB", "ClassC"]
    assert report["files"] == len(ucf[1]) and report["skipped"] == []
    assert meta["num_clips"] == sum(n // 8 for n in ucf[1].values()) == report["clips"]
    assert {"source", "start", "fps"} <= set(meta["manifest"][0])
    assert not (folder / "parts").exists()
    # the dataset with the same settings finds it
    data = VideoFolderDataset(root=str(ucf[0]), frames=8, resolution=16, cache_dir=str(tmp_path),
                              auto_prepare=False)
    assert data.cache_path == folder and len(data) == meta["num_clips"]


def test_workers_give_the_same_cache_as_inline(ucf, tmp_path):
    a = prepare.prepare_video_folder(root=ucf[0], frames=8, resolution=16, cache_dir=tmp_path / "a",
                                     workers=0, progress=False)
    b = prepare.prepare_video_folder(root=ucf[0], frames=8, resolution=16, cache_dir=tmp_path / "b",
                                     workers=2, progress=False)
    np.testing.assert_array_equal(np.load(a / "clips.npy"), np.load(b / "clips.npy"))
    np.testing.assert_array_equal(np.load(a / "labels.npy"), np.load(b / "labels.npy"))


def test_interrupted_prepare_resumes_without_redoing_files(ucf, tmp_path, monkeypatch):
    kw = dict(root=ucf[0], frames=8, resolution=16, cache_dir=tmp_path, workers=0, progress=False)
    real, calls = prepare.prepare_one, []

    def dies_on_third(job):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(job[3])
        return real(job)

    monkeypatch.setattr(prepare, "prepare_one", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_video_folder(**kw)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and not (folders[0] / "COMPLETE").exists()
    assert len(list((folders[0] / "parts").glob("*.json"))) == 2
    with pytest.raises(FileNotFoundError, match="no prepared cache"):
        VideoFolderDataset(root=str(ucf[0]), frames=8, resolution=16, cache_dir=str(tmp_path), auto_prepare=False)

    done, calls[:] = list(calls), []
    monkeypatch.setattr(prepare, "prepare_one", lambda job: calls.append(job[3]) or real(job))
    folder = prepare.prepare_video_folder(**kw)
    assert sorted(calls + done) == sorted(ucf[1]) and not set(calls) & set(done)
    assert json.loads((folder / "meta.json").read_text())["num_clips"] == sum(n // 8 for n in ucf[1].values())


def test_crash_before_the_marker_leaves_no_valid_cache(tmp_path, monkeypatch):
    root = tmp_path / "v"
    write_video(root / "a.mp4", gradient_clip(16, 16, 16), fps=8)
    kw = dict(root=root, frames=8, resolution=16, workers=0, progress=False)
    real_write = cache_lib.write_atomic

    def no_marker(path, data):
        if path.name == "COMPLETE":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(cache_lib, "write_atomic", no_marker)
    with pytest.raises(OSError, match="disk full"):
        prepare.prepare_video_folder(**kw)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="no prepared cache"):
        VideoFolderDataset(root=str(root), frames=8, resolution=16, auto_prepare=False)
    monkeypatch.setattr(prepare, "prepare_one", lambda job: pytest.fail("the part was already done"))
    prepare.prepare_video_folder(**kw)
    assert len(VideoFolderDataset(root=str(root), frames=8, resolution=16, auto_prepare=False)) == 2


@pytest.fixture
def bad_folder(tmp_path):
    root = tmp_path / "bad"
    good = ffmpeg_video(root / "good.mp4", frames=16)
    (root / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (root / "empty.avi").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    ffmpeg_video(root / "short.mkv", frames=5)
    ffmpeg_video(root / "locked.mp4", frames=16).chmod(0)
    return root


def test_bad_files_are_skipped_reported_and_summarised(bad_folder, tmp_path, monkeypatch, caplog):
    locked = str(bad_folder / "locked.mp4")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == locked else real_access(p, m))  # root reads all
    with caplog.at_level(logging.WARNING):
        folder = prepare.prepare_video_folder(root=bad_folder, frames=8, resolution=16, workers=0, progress=False)
    report = json.loads((folder / "prepare_report.json").read_text())
    reasons = {s["source"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"truncated.mp4", "empty.avi", "text.mp4", "short.mkv", "locked.mp4"}
    assert reasons["empty.avi"] == "empty file (0 bytes)"
    assert reasons["locked.mp4"] == "no read permission"
    assert reasons["short.mkv"].startswith("too short: 5 frames; one clip needs frames x frame_stride = 8 x 1 = 8")
    assert reasons["text.mp4"].startswith("cannot decode") and reasons["truncated.mp4"].startswith("cannot decode")
    assert report["usable_files"] == 1 and report["clips"] == 2
    assert "skipped 5 of 6 videos" in caplog.text and "prepare_report.json" in caplog.text


def test_no_usable_clips_is_an_error_that_says_why(bad_folder, tmp_path):
    (bad_folder / "good.mp4").unlink()
    (bad_folder / "locked.mp4").unlink()
    with pytest.raises(ValueError, match=r"no usable clips .* all 4 video\(s\) were skipped \(.*empty file"):
        prepare.prepare_video_folder(root=bad_folder, frames=8, resolution=16, workers=0, progress=False)
    folder = next((bad_folder / ".vidgan_cache").iterdir())
    assert (folder / "prepare_report.json").exists() and not (folder / "COMPLETE").exists()


def test_force_rebuilds_and_a_complete_cache_is_left_alone(tmp_path, monkeypatch):
    root = tmp_path / "v"
    write_video(root / "a.mp4", gradient_clip(8, 16, 16), fps=8)
    kw = dict(root=root, frames=8, resolution=16, workers=0, progress=False)
    prepare.prepare_video_folder(**kw)
    calls = []
    real = prepare.prepare_one
    monkeypatch.setattr(prepare, "prepare_one", lambda job: calls.append(1) or real(job))
    prepare.prepare_video_folder(**kw)
    assert calls == []
    prepare.prepare_video_folder(**kw, force=True)
    assert calls == [1]


def test_prepare_refuses_datasets_that_need_no_preparing(tmp_path):
    cfg = _compose("dataset=moving_mnist")
    with pytest.raises(ValueError, match="needs no preparing"):
        prepare.run(cfg)
    with pytest.raises(ValueError, match="workers must be >= 0"):
        prepare.run(_compose(f"dataset.root={tmp_path}", "workers=-1"))


def test_bad_backend_is_named(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", gradient_clip(8, 16, 16), fps=8)
    with pytest.raises(ValueError, match="auto, pyav, imageio"):
        prepare.prepare_video_folder(root=tmp_path / "v", frames=8, resolution=16, backend="cv2")


@pytest.mark.parametrize("backend", ["pyav", "imageio"])
def test_both_decoders_give_close_clips(tmp_path, backend):
    write_video(tmp_path / "v" / "a.mp4", gradient_clip(8, 32, 48), fps=8)
    folder = prepare.prepare_video_folder(root=tmp_path / "v", frames=8, resolution=16, backend=backend,
                                          cache_dir=tmp_path / backend, progress=False)
    clips = np.load(folder / "clips.npy")
    assert clips.shape == (1, 8, 16, 16, 3) and 60 < clips.mean() < 200


def test_vidgan_prepare_command(ucf, tmp_path):
    cmd = [sys.executable, "-m", "vidgan_cli", "prepare", f"dataset.root={ucf[0]}",
           f"dataset.cache_dir={tmp_path / 'cache'}", "dataset.frames=8", "dataset.resolution=16", "workers=2"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and (folders[0] / "COMPLETE").exists()
    assert "prepared" in done.stdout + done.stderr
    bad = subprocess.run([*cmd[:4], f"dataset.root={tmp_path / 'nothing'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "is not a folder" in bad.stderr
