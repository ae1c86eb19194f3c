"""Metrics of generated clips: FVD/KVD (I3D weights supplied by the user) and the built-in shapes evaluator.

``compute_metrics(G, dataset=..., names=["shapes"], ...)`` is what the trainer and ``vidgan evaluate``
call; :data:`METRICS` is the registry of names it accepts.
"""

from vidgan_cli.metrics.compute import METRICS, MetricsResult, compute_metrics, run_metrics

__all__ = ["METRICS", "MetricsResult", "compute_metrics", "run_metrics"]
