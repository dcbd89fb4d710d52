"""Anomaly detection for the ``anomaly`` rule kind: a model over feature vectors of live tags.

:mod:`.model` (the Gaussian-mixture model, its versioned files), :mod:`.training` (the healthy
window from the database, the retrain schedule), :mod:`.runner` (live vectors, scores, metrics,
retraining in the worker). Vectors from the plant simulator, offline, are made by
bench/anomaly_replay.py (it needs plantmon-sensors, which the worker's image has not).
"""

from plantmon_alerts.anomaly.model import AnomalyModel, ModelError, ModelMetadata, ModelStore
from plantmon_alerts.anomaly.runner import AnomalyMetrics, AnomalyRunner, Detector
from plantmon_alerts.anomaly.training import TrainingSet, build_matrix, next_training, read_healthy_window

__all__ = [
    "AnomalyMetrics",
    "AnomalyModel",
    "AnomalyRunner",
    "Detector",
    "ModelError",
    "ModelMetadata",
    "ModelStore",
    "TrainingSet",
    "build_matrix",
    "next_training",
    "read_healthy_window",
]
