"""compute_metrics (registry, sampling, cache, FVD/KVD path) and the `vidgan evaluate` app."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from vidgan_cli.data.shapes import ShapesDataset
from vidgan_cli.metrics import METRICS, compute_metrics, run_metrics
from vidgan_cli.metrics.i3d import I3D_FILENAME, InceptionI3d


class RandomG(nn.Module):
    """An untrained conditional generator: z and a class embedding -> a coarse volume, upsampled."""

    def __init__(self, num_classes=4, frames=16, resolution=32, z_dim=16):
        super().__init__()
        self.config = {"num_classes": num_classes, "frames": frames, "resolution": resolution, "z_dim": z_dim}
        self.embed = nn.Embedding(max(num_classes, 1), z_dim)
        self.fc = nn.Linear(z_dim, 3 * 4 * 8 * 8)

    def sample(self, n, y=None, generator=None, frames=None):
        z = torch.randn(n, self.config["z_dim"], generator=generator)
        h = z + (self.embed(y) if y is not None else 0)
        v = self.fc(h).view(n, 3, 4, 8, 8)
        size = (self.config["frames"], self.config["resolution"], self.config["resolution"])
        return torch.tanh(3 * F.interpolate(v, size=size, mode="trilinear"))


class RealAsFakeG(nn.Module):
    """Returns real clips of the requested classes (from another seed than the reference set)."""

    def __init__(self, dataset_kwargs, num_classes=4):
        super().__init__()
        self.config = {"num_classes": num_classes}
        self.data = ShapesDataset(**{**dataset_kwargs, "seed": 99, "num_classes": num_classes})
        self.next = 0

    def sample(self, n, y=None, generator=None, frames=None):
        k = max(self.config["num_classes"], 1)
        labels = y.tolist() if y is not None else [0] * n
        indices = [label + k * (self.next + i) for i, label in enumerate(labels)]
        self.next += n
        clips = self.data.render(indices)
        return clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


DATA = {"frames": 16, "resolution": 32, "num_classes": 4, "length": 5000, "seed": 0}


def run(G, names=("shapes",), dataset=None, **kw):
    kw = {"num_samples": 96, "batch_size": 48, "device": "cpu", "seed": 0, **kw}
    return compute_metrics(G, dataset=dataset or ShapesDataset(**DATA), names=list(names), **kw)


def test_registry_and_unknown_metric_error():
    assert set(METRICS) == {"shapes", "fvd", "kvd"}
    with pytest.raises(ValueError, match="allowed: fvd, kvd, shapes"):
        run(RandomG(), names=["fid"])
    with pytest.raises(ValueError, match="non-empty list"):
        run(RandomG(), names=[])


def test_shapes_metrics_random_generator_vs_real_clips():
    G = RandomG().train()
    bad = run(G)
    assert G.training, "compute_metrics must restore the generator's mode"
    good = run(RealAsFakeG(DATA))
    expected = {"shapes/fd", "shapes/fd_floor", "shapes/class_acc", "shapes/class_acc_real",
                "shapes/velocity_residual", "shapes/velocity_residual_real", "shapes/persistence",
                "shapes/persistence_real", "shapes/object_found", "shapes/object_found_real"}
    assert set(bad) == expected and set(good) == expected
    assert bad["shapes/class_acc"] <= 0.5
    assert good["shapes/class_acc"] >= 0.99 and good["shapes/class_acc_real"] >= 0.99
    assert good["shapes/fd"] < 3 * good["shapes/fd_floor"] < bad["shapes/fd"]
    assert good["shapes/velocity_residual"] < 0.02 and good["shapes/object_found"] == 1.0
    assert bad["shapes/fd_floor"] == good["shapes/fd_floor"]  # the same real sets
    assert run(G) == bad  # seeded: the same numbers again


def test_unconditional_has_no_class_accuracy_and_class_count_must_match():
    data = {**DATA, "num_classes": 0}
    out = run(RandomG(num_classes=0), dataset=ShapesDataset(**data), num_samples=16)
    assert "shapes/class_acc" not in out and "shapes/fd" in out
    with pytest.raises(ValueError, match="num_classes=4 but the dataset has 0"):
        run(RandomG(num_classes=4), dataset=ShapesDataset(**data), num_samples=16)


def test_shapes_refuses_other_frame_counts_and_too_few_real_clips():
    with pytest.raises(ValueError, match="16-frame"):
        run(RandomG(frames=8), dataset=ShapesDataset(**{**DATA, "frames": 8}))
    with pytest.raises(ValueError, match="needs 200 real clips"):
        run(RandomG(), dataset=ShapesDataset(**{**DATA, "length": 150}), num_samples=100)


def test_fvd_without_weights_says_what_is_needed(monkeypatch):
    monkeypatch.delenv("VIDGAN_I3D_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match=I3D_FILENAME):
        run(RandomG(), names=["fvd"])


def random_i3d(path):
    """An I3D weights file with He-scaled random convolutions, so the logits vary with the input."""
    torch.manual_seed(0)
    model = InceptionI3d()
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(model.state_dict(), path)
    return path


def test_fvd_kvd_with_i3d_weights_and_real_feature_cache(tmp_path, monkeypatch):
    weights = random_i3d(tmp_path / I3D_FILENAME)
    data = {**DATA, "frames": 8, "length": 50}
    G = RandomG(frames=8)
    kw = {"num_samples": 2, "batch_size": 2, "i3d_path": str(weights), "cache_dir": str(tmp_path / "cache")}
    first = run(G, names=["fvd", "kvd"], dataset=ShapesDataset(**data), **kw)
    assert set(first) == {"fvd", "kvd"} and first["fvd"] > 1e-3
    assert len(list((tmp_path / "cache").glob("real_i3d_*.pt"))) == 1

    cached = ShapesDataset(**data)
    monkeypatch.setattr(cached, "__getitems__", lambda idx: pytest.fail("real clips read despite the cache"))
    kw.pop("num_samples")
    again = run_metrics(G, names=["fvd", "kvd"], dataset=cached, device="cpu", num_samples=2, **kw)
    assert again.values == pytest.approx(first, rel=1e-9)
    assert set(again.manifest["weights_sha256"]) == {I3D_FILENAME}


# ---------------------------------------------------------------------------------------------------
# vidgan evaluate


def write_checkpoint(run_dir, data=DATA):
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    config = {"dataset": {"_target_": "vidgan_cli.data.shapes.ShapesDataset", **data}}
    torch.save({"G": {}, "G_ema": {}, "D": {}, "step": 7, "G_class": "vidgan_cli.models.cgan3d.Generator",
                "G_config": {}, "config_yaml": OmegaConf.to_yaml(config),
                "class_names": ["circle", "square", "triangle", "cross"]}, path)
    return path


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import vidgan_cli.evaluate  # noqa: F401  (registers evaluate_schema)

    with initialize_config_module(config_module="vidgan_cli.conf", version_base="1.3"):
        return hydra_compose(config_name="evaluate", overrides=list(overrides))


def test_default_config():
    cfg = compose()
    assert list(cfg.metrics) == ["shapes"] and cfg.device == "auto" and cfg.num_samples >= 256


def test_evaluate_writes_eval_json_next_to_the_run(tmp_path, monkeypatch):
    from vidgan_cli.evaluate import evaluate
    from vidgan_cli.train import checkpoint

    ckpt = write_checkpoint(tmp_path / "run")
    monkeypatch.setattr(checkpoint, "build_generator", lambda ckpt, ema=True: RealAsFakeG(DATA))
    cfg = compose(f"ckpt={ckpt}", "num_samples=32", "+dataset.seed=3", f"cache_dir={tmp_path / 'cache'}")
    report = evaluate(cfg)
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["path"] == str(tmp_path / "run" / "eval.json")
    assert saved["step"] == 7 and saved["metrics"]["shapes/class_acc"] >= 0.99
    proto = saved["protocol"]
    assert proto["real_clips"] == proto["fake_clips"] == proto["floor_clips"] == 32
    assert (proto["frames"], proto["resolution"], proto["seed"]) == (16, 32, 0)
    assert proto["dataset"]["seed"] == 3 and proto["dataset_config"]["seed"] == 3
    assert "balanced over 4 classes" in proto["conditions"]
    assert len(proto["weights_sha256"]["shapes_evaluator.pt"]) == 64

    out = tmp_path / "elsewhere"
    evaluate(compose(f"ckpt={ckpt}", "num_samples=8", f"out_dir={out}", "cache_dir=null"))
    assert (out / "eval.json").is_file()


def test_evaluate_errors(tmp_path):
    from vidgan_cli.config import ConfigError
    from vidgan_cli.evaluate import evaluate

    with pytest.raises(ConfigError, match="ckpt=PATH"):
        evaluate(compose())
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        evaluate(compose(f"ckpt={tmp_path / 'missing.ckpt'}"))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(compose(f"ckpt={tmp_path / 'missing.ckpt'}", "metrics=[fid]"))
    ckpt = write_checkpoint(tmp_path / "run")
    with pytest.raises(ConfigError, match="unknown key"):
        evaluate(compose(f"ckpt={ckpt}", "+dataset.colour=red"))


@pytest.mark.slow
def test_cli_end_to_end_with_a_cgan3d_checkpoint(tmp_path):
    from vidgan_cli.models.cgan3d import Generator

    ckpt = write_checkpoint(tmp_path / "run")
    G = Generator(z_dim=8, num_classes=4, frames=16, resolution=32, base_channels=4, max_channels=8)
    state = torch.load(ckpt, weights_only=True)
    state.update(G=G.state_dict(), G_ema=G.state_dict(), G_config=dict(G.config))
    torch.save(state, ckpt)
    env = {**os.environ, "HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "vidgan_cli", "evaluate", f"ckpt={ckpt}", "num_samples=16",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "shapes/fd" in done.stdout and "shapes/class_acc" in done.stdout
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]["shapes/object_found_real"] == 1

    missing = subprocess.run(cmd[:4] + [f"ckpt={tmp_path / 'nope.ckpt'}", cmd[-1]], capture_output=True,
                             text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr + missing.stdout
