"""Compute metrics of a generator against a dataset: sampling, real-feature caching, the registry.

A metric is a name in :data:`METRICS`, bound to the feature extractor it needs and a pure function of
the fake and real features.  ``compute_metrics`` makes one pass over real clips and one over generated
clips, feeding every extractor the requested metrics need, then evaluates each metric.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vidgan_cli.metrics.features import I3DFeatures, ShapesFeatures
from vidgan_cli.metrics.frechet import frechet_from_features, polynomial_mmd
from vidgan_cli.metrics.motion import summarise
from vidgan_cli.video_io import to_uint8

log = logging.getLogger(__name__)
Features = dict[str, torch.Tensor]
CACHE_FORMAT = 1
MOTION_KEYS = ("velocity_residual", "persistence", "object_found")


# --------------------------------------------------------------------------------------------------
# metrics: pure functions of (fake, real, floor) features


def shapes_metrics(fake: Features, real: Features, floor: Features, class_index: torch.Tensor) -> dict:
    out = {"shapes/fd": frechet_from_features(fake["features"], real["features"]),
           "shapes/fd_floor": frechet_from_features(floor["features"], real["features"])}
    if "labels" in fake and len(class_index):
        out["shapes/class_acc"] = _accuracy(fake["pred"], class_index[fake["labels"]])
        out["shapes/class_acc_real"] = _accuracy(real["pred"], class_index[real["labels"]])
    fake_motion = summarise({k: fake[k] for k in MOTION_KEYS})
    real_motion = summarise({k: real[k] for k in MOTION_KEYS})
    for key in MOTION_KEYS:
        out[f"shapes/{key}"] = fake_motion[key]
        out[f"shapes/{key}_real"] = real_motion[key]
    return out


def fvd_metric(fake: Features, real: Features, floor, class_index) -> dict:
    return {"fvd": frechet_from_features(fake["features"], real["features"])}


def kvd_metric(fake: Features, real: Features, floor, class_index) -> dict:
    return {"kvd": polynomial_mmd(fake["features"], real["features"])}


def _accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred == target).double().mean())


@dataclass(frozen=True)
class Metric:
    extractor: str
    compute: Callable[..., dict[str, float]]


METRICS = {
    "shapes": Metric("shapes", shapes_metrics),   # shapes/{fd, fd_floor, class_acc, motion...}
    "fvd": Metric("i3d", fvd_metric),
    "kvd": Metric("i3d", kvd_metric),
}


def make_extractor(name: str, *, dataset, device, i3d_path):
    """Build an extractor; this loads its weights and checks the dataset before anything is sampled."""
    if name == "shapes":
        return ShapesFeatures(dataset, device)
    return I3DFeatures(i3d_path, device)


def check_names(names) -> list[str]:
    if isinstance(names, str) or not names:
        raise ValueError(f"metrics must be a non-empty list of names from {sorted(METRICS)}; got {names!r}")
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; allowed: {', '.join(sorted(METRICS))}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------------
# sampling real and fake clips


def resolve_device(device) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def balanced_conditions(num_samples: int, num_classes: int, seed: int) -> torch.Tensor | None:
    """Class ids ``long [N]``: every class equally often (up to one), in a seeded random order."""
    if num_classes == 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    return (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=gen)]


def real_indices(length: int, num_samples: int, seed: int, floor: bool) -> tuple[list[int], list[int]]:
    """Random reference indices and (when ``floor``) a disjoint second set of the same size.

    The reference set depends only on ``(length, num_samples, seed)``, not on ``floor``, so every
    metric compares against the same real clips whichever metrics are requested together.
    """
    need = num_samples * (2 if floor else 1)
    if need > length:
        raise ValueError(f"the dataset has {length} clips; num_samples={num_samples} needs {need} real "
                         "clips" + (" (two disjoint sets for the real-vs-real floor)" if floor else ""))
    ref = np.random.default_rng([seed, 0x5EA1]).choice(length, size=num_samples, replace=False).tolist()
    others: list[int] = []
    taken, rng = set(ref), np.random.default_rng([seed, 0xF1007])
    while floor and len(others) < num_samples:  # rejection sampling: never materialises range(length)
        for i in rng.integers(0, length, size=num_samples).tolist():
            if i not in taken and len(others) < num_samples:
                taken.add(i)
                others.append(i)
    return sorted(ref), sorted(others)


def real_batches(dataset, indices: list[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        if hasattr(dataset, "__getitems__"):
            clips, labels = dataset.__getitems__(chunk)
        else:
            items = [dataset[i] for i in chunk]
            clips = torch.stack([c for c, _ in items])
            labels = torch.stack([torch.as_tensor(y) for _, y in items])
        yield clips, labels.long()


def to_uint8_clips(video: torch.Tensor) -> torch.Tensor:
    """``float [B, 3, T, H, W]`` in ``[-1, 1]`` -> ``uint8 [B, T, H, W, 3]`` on the CPU, quantised
    exactly as the MP4s of ``vidgan generate`` are (``video_io.to_uint8``)."""
    return torch.from_numpy(to_uint8(video))


def fake_batches(G, conditions: torch.Tensor | None, num_samples: int, batch_size: int,
                 seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    param = next(iter(G.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        y = None if conditions is None else conditions[start:start + n]
        video = G.sample(n, None if y is None else y.to(device), generator=gen)
        yield to_uint8_clips(video), y


def extract(extractors: dict, batches, desc: str = "features", total: int | None = None
            ) -> dict[str, Features]:
    """Run every extractor over every batch; concatenate per-clip outputs (plus the batch labels)."""
    parts: dict[str, list[Features]] = {name: [] for name in extractors}
    shown = tqdm(batches, desc=desc, total=total, unit="batch", leave=False,
                 disable=not sys.stderr.isatty())
    for clips, labels in shown:
        for name, ex in extractors.items():
            out = ex(clips)
            if labels is not None:
                out["labels"] = labels.cpu()
            parts[name].append(out)
    return {name: {k: torch.cat([p[k] for p in chunks]) for k in chunks[0]} for name, chunks in parts.items()}


# --------------------------------------------------------------------------------------------------
# real-feature cache


def dataset_key(dataset) -> dict:
    """The settings that determine a dataset's clips: its class and its plain public attributes."""
    plain = (int, float, str, bool, type(None), tuple, list)
    attrs = {k: v for k, v in sorted(vars(dataset).items()) if not k.startswith("_") and isinstance(v, plain)}
    return {"class": f"{type(dataset).__module__}.{type(dataset).__qualname__}", **attrs}


def cache_file(cache_dir: str | os.PathLike, key: dict) -> Path:
    text = json.dumps(key, sort_keys=True, default=str)
    return Path(cache_dir).expanduser() / f"real_{key['extractor']}_{hashlib.sha256(text.encode()).hexdigest()[:20]}.pt"


def load_cached(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt cache entry is recomputed, never fatal
        log.warning("ignoring unreadable metrics cache %s: %s", path, err)
        return None


def save_cached(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        torch.save(value, f)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# the entry points


@dataclass
class MetricsResult:
    values: dict[str, float]
    manifest: dict = field(default_factory=dict)


def real_features(extractors: dict, dataset, num_samples: int, batch_size: int, seed: int,
                  cache_dir) -> dict[str, dict[str, Features]]:
    """``{extractor: {"real": ..., "floor": ...}}``, from the cache where possible."""
    result, todo, files = {}, {}, {}
    for name, ex in extractors.items():
        key = {"format": CACHE_FORMAT, "extractor": name, "weights": ex.weights, "dataset": dataset_key(dataset),
               "num_samples": num_samples, "seed": seed, "floor": ex.needs_floor}
        files[name] = cache_file(cache_dir, key) if cache_dir else None
        cached = load_cached(files[name]) if files[name] else None
        if cached is not None:
            log.info("real %s features from cache %s", name, files[name])
            result[name] = cached
        else:
            todo[name] = ex
    if todo:
        ref, floor = real_indices(len(dataset), num_samples, seed,
                                  floor=any(ex.needs_floor for ex in todo.values()))
        real = extract(todo, real_batches(dataset, ref, batch_size), "real clips",
                       -(-len(ref) // batch_size))
        floored = {n: e for n, e in todo.items() if e.needs_floor}
        floors = extract(floored, real_batches(dataset, floor, batch_size), "real floor clips",
                         -(-len(floor) // batch_size)) if floored else {}
        for name in todo:
            result[name] = {"real": real[name], **({"floor": floors[name]} if name in floors else {})}
            if files[name]:
                save_cached(files[name], result[name])
    return result


def run_metrics(G, *, dataset, names, num_samples: int, batch_size: int, device, seed: int = 0,
                i3d_path: str | None = None, cache_dir: str | None = None) -> MetricsResult:
    """Metrics and the protocol they were computed with (see :func:`compute_metrics`)."""
    names = check_names(names)
    if num_samples < 2 or batch_size < 1:
        raise ValueError(f"num_samples must be >= 2 and batch_size >= 1; got {num_samples}, {batch_size}")
    device = resolve_device(device)
    class_names = list(getattr(dataset, "class_names", []) or [])
    g_config = getattr(G, "config", None)
    g_classes = g_config.get("num_classes") if isinstance(g_config, dict) else None
    if g_classes is not None and g_classes != len(class_names):
        raise ValueError(f"the generator has num_classes={g_classes} but the dataset has "
                         f"{len(class_names)} classes {class_names}")
    wanted = list(dict.fromkeys(METRICS[n].extractor for n in names))
    extractors = {e: make_extractor(e, dataset=dataset, device=device, i3d_path=i3d_path) for e in wanted}

    reals = real_features(extractors, dataset, num_samples, batch_size, seed, cache_dir)
    conditions = balanced_conditions(num_samples, len(class_names), seed)
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad():
            fakes = extract(extractors, fake_batches(G, conditions, num_samples, batch_size, seed),
                            "generated clips", -(-num_samples // batch_size))
    finally:
        G.train(was_training)

    values: dict[str, float] = {}
    for name in names:
        metric = METRICS[name]
        ex, real = extractors[metric.extractor], reals[metric.extractor]
        class_index = getattr(ex, "class_index", torch.zeros(0, dtype=torch.long))
        values.update(metric.compute(fakes[metric.extractor], real["real"], real.get("floor"), class_index))
    manifest = protocol(names, dataset, extractors, num_samples, seed, class_names)
    return MetricsResult({k: float(v) for k, v in values.items()}, manifest)


def protocol(names, dataset, extractors: dict, num_samples: int, seed: int, class_names) -> dict:
    floor = any(ex.needs_floor for ex in extractors.values())
    weights = {file: sha for ex in extractors.values() for file, sha in ex.weights.items()}
    k = len(class_names)
    return {
        "requested": list(names),
        "real_clips": num_samples, "floor_clips": num_samples if floor else 0, "fake_clips": num_samples,
        "frames": getattr(dataset, "frames", None), "resolution": getattr(dataset, "resolution", None),
        "split": f"{num_samples} random clips (seed {seed}) of the dataset's {len(dataset)}"
                 + ("; the floor set is another disjoint draw of the same size" if floor else ""),
        "dataset": dataset_key(dataset),
        "seed": seed,
        "conditions": (f"balanced over {k} classes {class_names}, order shuffled with seed {seed}"
                       if k else "unconditional"),
        "weights_sha256": weights,
    }


def compute_metrics(G, *, dataset, names: list[str], num_samples: int, batch_size: int, device,
                    seed: int = 0, i3d_path: str | None = None, cache_dir: str | None = None) -> dict[str, float]:
    """Sample ``num_samples`` clips from ``G`` and compute the named metrics against ``dataset``.

    ``names`` come from :data:`METRICS` (``shapes``, ``fvd``, ``kvd``); results are flat, e.g.
    ``shapes/fd``, ``shapes/class_acc``, ``fvd``.  G runs in eval mode under ``no_grad``, conditioned
    on classes balanced over the dataset's classes (``None`` when unconditional), with seeded noise.
    Real-data features are cached in ``cache_dir`` (keyed by dataset settings, weights and protocol).
    """
    return run_metrics(G, dataset=dataset, names=names, num_samples=num_samples, batch_size=batch_size,
                       device=device, seed=seed, i3d_path=i3d_path, cache_dir=cache_dir).values

