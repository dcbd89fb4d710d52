"""The anomaly detectors of a worker: live vectors, scores as samples and metrics, retraining.

One :class:`Detector` per ``anomaly`` rule. The worker hands it every sample
(:meth:`AnomalyRunner.observe`: it keeps the latest good value of each feature tag) and ticks it
(:meth:`AnomalyRunner.tick`): once per ``cadence`` it builds the vector from the latest values,
scores it, sets ``plantmon_alerts_anomaly_score{rule}`` and returns the score as a
:class:`~plantmon_common.opcua.Sample` of the rule's virtual tag ``Plant/Anomaly/<rule>``,
which the engine evaluates like any other sample (threshold, hysteresis, ``for``). No vector is
made while a feature is missing or older than ``max_feature_age``: no score, no verdict.

:meth:`AnomalyRunner.run` trains when due (:func:`~plantmon_alerts.anomaly.training.next_training`):
it reads the healthy window from the database, fits in a thread, saves a new version in the
state folder and swaps it in. At start the newest saved version is loaded, so a restart does
not need the database to score.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from plantmon_common.opcua import Sample
from prometheus_client import CollectorRegistry, Counter, Gauge

from plantmon_alerts.anomaly.model import AnomalyModel, ModelError, ModelStore
from plantmon_alerts.anomaly.training import TrainingSet, next_training
from plantmon_alerts.rules import AnomalyRule, RuleBase

logger = logging.getLogger(__name__)

RETRY_S = 600.0
CHECK_S = 30.0

#: Reads the healthy training window of a rule ending at a time (the database in the worker).
WindowReader = Callable[[AnomalyRule, datetime], Awaitable[TrainingSet]]


class AnomalyMetrics:
    """Score, model version and trainings per rule."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.score = Gauge(
            "plantmon_alerts_anomaly_score",
            "Latest anomaly score (0 typical healthy, 1 = the healthy 99.9th percentile)",
            ["rule"],
            registry=registry,
        )
        self.version = Gauge(
            "plantmon_alerts_anomaly_model_version",
            "Version of the model in use (0: none)",
            ["rule"],
            registry=registry,
        )
        self.trained = Gauge(
            "plantmon_alerts_anomaly_model_trained_timestamp_seconds",
            "When the model in use was trained",
            ["rule"],
            registry=registry,
        )
        self.trainings = Counter(
            "plantmon_alerts_anomaly_trainings", "Training attempts", ["rule", "outcome"], registry=registry
        )

    def forget(self, rule: str) -> None:
        for gauge in (self.score, self.version, self.trained):
            with contextlib.suppress(KeyError):
                gauge.remove(rule)


@dataclass
class Detector:
    """One anomaly rule's live state."""

    rule: AnomalyRule
    store: ModelStore
    model: AnomalyModel | None = None
    latest: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    next_vector_at: datetime | None = None
    last_attempt: datetime | None = None
    last_failed: bool = False

    def observe(self, sample: Sample) -> None:
        if not self.rule.selects_feature(sample.path):
            return
        if sample.is_good and sample.value is not None and not np.isnan(sample.value):
            self.latest[sample.path] = (sample.value, sample.source_time)
        else:
            self.latest.pop(sample.path, None)

    def vector(self, now: datetime) -> np.ndarray | None:
        """The model's input from the latest values, or ``None`` when a feature is missing or old."""
        if self.model is None:
            return None
        values = []
        for path in self.model.features:
            found = self.latest.get(path)
            if found is None or (now - found[1]).total_seconds() > self.rule.max_feature_age_s:
                return None
            values.append(found[0])
        return np.asarray(values, dtype=np.float64)

    def trained_at(self) -> datetime | None:
        return datetime.fromisoformat(self.model.metadata.trained_at) if self.model else None


class AnomalyRunner:
    """Every anomaly rule's detector; see the module docstring."""

    def __init__(
        self,
        rules: Iterable[RuleBase],
        state_dir: Path,
        registry: CollectorRegistry,
        read_window: WindowReader | None = None,
        *,
        retry_s: float = RETRY_S,
    ) -> None:
        self.state_dir = state_dir
        self.metrics = AnomalyMetrics(registry)
        self.read_window = read_window
        self.retry_s = retry_s
        self.detectors: dict[str, Detector] = {}
        self._training = asyncio.Lock()
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[RuleBase]) -> None:
        """Follow a (re)loaded rules file: keep the detectors of unchanged rules, load new ones."""
        wanted = {r.name: r for r in rules if isinstance(r, AnomalyRule)}
        for name in list(self.detectors):
            if name not in wanted:
                del self.detectors[name]
                self.metrics.forget(name)
        for name, rule in wanted.items():
            current = self.detectors.get(name)
            if current is not None and current.rule == rule:
                continue
            detector = Detector(rule, ModelStore(self.state_dir, name))
            if current is not None and current.rule.tags == rule.tags:
                detector.model, detector.latest = current.model, current.latest
            else:
                detector.model = detector.store.latest()
            self.detectors[name] = detector
            self._show_model(detector)
            logger.info(
                "anomaly detector ready",
                extra={"rule": name, "model_version": detector.model.version if detector.model else None},
            )

    def _show_model(self, detector: Detector) -> None:
        name = detector.rule.name
        model = detector.model
        self.metrics.version.labels(name).set(model.version if model else 0)
        trained = detector.trained_at()
        self.metrics.trained.labels(name).set(trained.timestamp() if trained else 0)

    # -- live ----------------------------------------------------------------------------------

    def observe(self, sample: Sample) -> None:
        for detector in self.detectors.values():
            detector.observe(sample)

    def tick(self, now: datetime) -> list[Sample]:
        """Score every detector whose cadence is due; the scores as samples for the engine."""
        scores: list[Sample] = []
        for detector in self.detectors.values():
            if detector.model is None or (detector.next_vector_at is not None and now < detector.next_vector_at):
                continue
            detector.next_vector_at = now + _seconds(detector.rule.cadence_s)
            vector = detector.vector(now)
            if vector is None:
                continue
            score = float(detector.model.score(vector)[0])
            self.metrics.score.labels(detector.rule.name).set(score)
            scores.append(Sample(detector.rule.score_path, score, 0, now))
        return scores

    # -- training ------------------------------------------------------------------------------

    def due(self, now: datetime) -> list[Detector]:
        """The detectors whose training is due at ``now``."""
        found = []
        for detector in self.detectors.values():
            when = next_training(
                detector.trained_at(),
                detector.last_attempt,
                detector.last_failed,
                every_s=detector.rule.retrain_every_s,
                retry_s=self.retry_s,
            )
            if when is None or when <= now:
                found.append(detector)
        return found

    async def train(self, detector: Detector, now: datetime) -> bool:
        """Read the window, fit in a thread, save a new version, swap it in; False when it failed."""
        if self.read_window is None:
            return False
        rule = detector.rule
        detector.last_attempt = now
        try:
            data = await self.read_window(rule, now)
            if len(data.vectors) < rule.min_vectors:
                raise ModelError(f"{len(data.vectors)} healthy vectors in the window, {rule.min_vectors} needed")
            version = detector.store.next_version()
            model = await asyncio.to_thread(
                AnomalyModel.fit,
                data.vectors,
                data.features,
                rule=rule.name,
                version=version,
                trained_at=now,
                window=(data.start, data.end),
                cadence_s=rule.cadence_s,
            )
            await asyncio.to_thread(detector.store.save, model)
        except Exception as exc:  # any failure keeps the current model; logged, retried
            detector.last_failed = True
            self.metrics.trainings.labels(rule.name, "failed").inc()
            logger.warning(
                "anomaly model not trained, keeping the current one",
                extra={"rule": rule.name, "error": f"{type(exc).__name__}: {exc}", "retry_s": self.retry_s},
            )
            return False
        if self.detectors.get(rule.name) is detector:
            detector.model = model
            self._show_model(detector)
        detector.last_failed = False
        self.metrics.trainings.labels(rule.name, "ok").inc()
        logger.info(
            "anomaly model trained",
            extra={"rule": rule.name, "version": model.version, "vectors": model.metadata.vectors},
        )
        return True

    async def train_due(self, now: datetime) -> int:
        """Train every detector that is due; the number trained."""
        async with self._training:
            results = [await self.train(d, now) for d in self.due(now)]
        return sum(results)

    async def run(self, stop: asyncio.Event, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """Train whenever due until ``stop`` (checked every :data:`CHECK_S` seconds)."""
        while not stop.is_set():
            await self.train_due(clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CHECK_S)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
