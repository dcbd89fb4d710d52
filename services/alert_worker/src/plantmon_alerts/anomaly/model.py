"""The anomaly model: a Gaussian mixture over standardised feature vectors, saved with a version.

Why a Gaussian mixture and not an IsolationForest: a developing bearing fault first shows as a
small, *coordinated* rise of a group of correlated features (the 3-7 kHz spectrum bands, some
MFCC), each still within its own healthy noise. A density model with full covariances adds that
evidence up (its negative log-likelihood is a Mahalanobis distance per component), while an
IsolationForest isolates points with axis-parallel cuts and needs one feature to leave its range
before the score moves. Two components with full, shrunk covariances (``reg_covar`` 0.1 on
standardised features) follow the plant's operating states (load moves temperatures, speed and
supply together) without over-fitting a few hours of data; more components or less shrinkage
fitted the training day better and raised more false alarms on other seeds. Measured on the
simulator, against an IsolationForest and a threshold baseline: docs/benchmarks.md.

The score is normalised on the training window: 0 is the median healthy vector, 1 the 99.9th
percentile, so a rule's ``threshold`` keeps its meaning across retrainings.

:class:`ModelStore` keeps the models of one rule in ``<state dir>/anomaly/<rule>/`` as
``model-v000001.joblib`` (the fitted objects and the metadata) plus a ``.json`` copy of the
metadata for people; files are written atomically and the newest loadable version wins.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # scikit-learn is imported only when a model is trained or loaded (memory)
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

ALGORITHM = "gaussian_mixture"
COMPONENTS = 2
REG_COVAR = 0.1  # added to the covariance diagonal of standardised features: shrinkage
CALIBRATION_QUANTILE = 0.999
KEEP_VERSIONS = 5
FORMAT = 1
_FILE = re.compile(r"^model-v(\d{6})\.joblib$")


class ModelError(RuntimeError):
    """A model cannot be trained, saved or loaded."""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What a saved model says about itself."""

    rule: str
    version: int
    trained_at: str
    window_start: str
    window_end: str
    features: tuple[str, ...]
    vectors: int
    cadence_s: float
    algorithm: str = ALGORITHM
    components: int = COMPONENTS
    sklearn_version: str = ""
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = list(self.features)
        return out


class AnomalyModel:
    """A fitted scaler + Gaussian mixture, the score's calibration, and the metadata."""

    def __init__(
        self, metadata: ModelMetadata, scaler: StandardScaler, mixture: GaussianMixture, center: float, scale: float
    ) -> None:
        self.metadata = metadata
        self.scaler = scaler
        self.mixture = mixture
        self.center = center
        self.scale = scale

    @property
    def features(self) -> tuple[str, ...]:
        return self.metadata.features

    @property
    def version(self) -> int:
        return self.metadata.version

    @classmethod
    def fit(
        cls,
        vectors: FloatArray,
        features: tuple[str, ...],
        *,
        rule: str,
        version: int,
        trained_at: datetime,
        window: tuple[datetime, datetime],
        cadence_s: float,
        components: int = COMPONENTS,
        seed: int = 0,
    ) -> AnomalyModel:
        """Train on healthy ``vectors`` (rows in the order of ``features``)."""
        import sklearn
        from sklearn.mixture import GaussianMixture
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(features):
            raise ModelError(f"vectors must be (n, {len(features)}), got {x.shape}")
        if x.shape[0] < max(10, components * 5):
            raise ModelError(f"too few training vectors: {x.shape[0]}")
        if not np.isfinite(x).all():
            raise ModelError("training vectors hold NaN or infinite values")
        scaler = StandardScaler().fit(x)
        # A constant feature has zero spread: StandardScaler leaves it at scale 1, which is fine.
        mixture = GaussianMixture(
            n_components=components, covariance_type="full", reg_covar=REG_COVAR, random_state=seed, n_init=1
        ).fit(scaler.transform(x))
        raw = -mixture.score_samples(scaler.transform(x))
        center = float(np.median(raw))
        scale = float(np.quantile(raw, CALIBRATION_QUANTILE)) - center
        if not scale > 0:
            scale = 1.0
        metadata = ModelMetadata(
            rule=rule,
            version=version,
            trained_at=trained_at.isoformat(),
            window_start=window[0].isoformat(),
            window_end=window[1].isoformat(),
            features=tuple(features),
            vectors=int(x.shape[0]),
            cadence_s=cadence_s,
            components=components,
            sklearn_version=sklearn.__version__,
        )
        return cls(metadata, scaler, mixture, center, scale)

    def score(self, vectors: FloatArray) -> FloatArray:
        """Scores of rows of feature values (0 = typical healthy, 1 = healthy 99.9th percentile)."""
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        raw = -self.mixture.score_samples(self.scaler.transform(x))
        return np.asarray((raw - self.center) / self.scale, dtype=np.float64)


class ModelStore:
    """The saved versions of one rule's model, in ``<state_dir>/anomaly/<rule>/``."""

    def __init__(self, state_dir: Path, rule: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rule)
        self.folder = state_dir / "anomaly" / safe

    def versions(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (_FILE.match(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def next_version(self) -> int:
        versions = self.versions()
        return versions[-1] + 1 if versions else 1

    def path_of(self, version: int) -> Path:
        return self.folder / f"model-v{version:06d}.joblib"

    def save(self, model: AnomalyModel) -> Path:
        """Write the model atomically; keep the newest :data:`KEEP_VERSIONS` versions."""
        import joblib

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_of(model.version)
        payload = {
            "metadata": model.metadata.to_json(),
            "scaler": model.scaler,
            "mixture": model.mixture,
            "center": model.center,
            "scale": model.scale,
        }
        _atomic(path, lambda f: joblib.dump(payload, f))
        text = json.dumps(model.metadata.to_json(), indent=2).encode()
        _atomic(path.with_suffix(".json"), lambda f: f.write(text))
        for old in self.versions()[:-KEEP_VERSIONS]:
            for stale in (self.path_of(old), self.path_of(old).with_suffix(".json")):
                stale.unlink(missing_ok=True)
        logger.info(
            "anomaly model saved",
            extra={"rule": model.metadata.rule, "version": model.version, "path": str(path)},
        )
        return path

    def load(self, version: int) -> AnomalyModel:
        import joblib

        path = self.path_of(version)
        try:
            payload = joblib.load(path)
            meta = dict(payload["metadata"])
            meta["features"] = tuple(meta["features"])
            metadata = ModelMetadata(**meta)
        except (OSError, KeyError, TypeError, ValueError, EOFError) as exc:
            raise ModelError(f"cannot load {path}: {exc}") from exc
        if metadata.format != FORMAT:
            raise ModelError(f"{path} has format {metadata.format}, this worker reads {FORMAT}")
        return AnomalyModel(metadata, payload["scaler"], payload["mixture"], payload["center"], payload["scale"])

    def latest(self) -> AnomalyModel | None:
        """The newest loadable version (a broken file is logged and skipped), or ``None``."""
        for version in reversed(self.versions()):
            try:
                return self.load(version)
            except ModelError as exc:
                logger.error("skipping an unreadable anomaly model", extra={"error": str(exc)})
        return None


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
