"""Every project image builds from the repository's Dockerfiles, runs as its unprivileged user, and
carries no compiler, no pip cache and no package of another service, and every module of its
service (and of plantmon_common, less the web helpers where the image has no web extra) imports
with the packages the image has: its own lock, requirements/images/. The data files of the
service's package (templates, default rules, SQL migrations) are installed with it.

The sizes are printed (docs/benchmarks.md records them). They are measured on the CI base
(Debian 12 minbase with Debian's python3, see plantmon_dev.docker_engine), which is about
45 MB larger than python:3.11-slim-bookworm; the layers above it are the production ones.
"""

from __future__ import annotations

import json

import pytest
from plantmon_dev.docker_engine import BASE_IMAGE, DockerEngine

from tests.containers.compose_support import PROJECT_IMAGES
from tests.deploy.deploy_files import REPO

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300, func_only=True)]

# What each image must not contain: the heavy packages of the other services.
FOREIGN = {
    "migrate": ("librosa", "numba", "sklearn", "azure.eventhub", "fastapi", "uvicorn", "spidev"),
    "opc_server": ("librosa", "numba", "sklearn", "azure.eventhub", "fastapi", "uvicorn", "spidev"),
    "opc_scraper": ("librosa", "numba", "sklearn", "azure.eventhub", "fastapi", "uvicorn", "spidev"),
    "alert_worker": ("librosa", "numba", "spidev"),
    "sensors": ("azure.eventhub", "psycopg"),  # (scikit-learn comes with librosa)
}
# The console script each image's ENTRYPOINT names: its module must import with what the image has.
SCRIPT = {
    "migrate": "plantmon-migrate",
    "opc_server": "plantmon-opc-server",
    "opc_scraper": "plantmon-scraper",
    "alert_worker": "plantmon-alerts",
    "sensors": "plantmon-sensors",
}
CHECK = """
import importlib, importlib.metadata, importlib.util, json, os, pathlib, shutil, sys
script, foreign = sys.argv[1], sys.argv[2].split(",")
(entry,) = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == script]
importlib.import_module(entry.module)
# Every module of the service's package, and of plantmon_common what the image's extras cover.
import pkgutil
own = importlib.import_module(entry.module.split(".")[0])
modules = [m.name for m in pkgutil.walk_packages(own.__path__, own.__name__ + ".")]
common = importlib.import_module("plantmon_common")
web = importlib.util.find_spec("fastapi") is not None
modules += [m.name for m in pkgutil.walk_packages(common.__path__, "plantmon_common.")
            if web or m.name != "plantmon_common.service"]
failed = {}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
own_dist = importlib.metadata.distribution(importlib.metadata.packages_distributions()[own.__name__][0])
data = sorted(str(f) for f in own_dist.files or []
              if str(f).startswith(own.__name__ + "/") and f.suffix not in (".py", ".pyc"))
caches = [str(p) for root in ("/root", "/tmp", "/opt/venv") for p in pathlib.Path(root).glob("**/.cache/pip")]
print(json.dumps({
    "compilers": [c for c in ("gcc", "cc", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc") if shutil.which(c)],
    "pip_caches": caches,
    "entry": entry.value,
    "link": os.readlink(shutil.which("plantmon-service")),
    "modules": len(modules),
    "package": own.__name__,
    "data": data,
    "failed": failed,
    "foreign": [m for m in foreign if importlib.util.find_spec(m.split(".")[0]) is not None
                and importlib.util.find_spec(m) is not None],
}))
"""


def image_of(service: str) -> str:
    return f"{PROJECT_IMAGES[service]}:dev"


def package_data_in_the_repository(package: str) -> set[str]:
    """The non-Python files of ``package`` in its source folder (``<package>/...`` paths)."""
    (source,) = [p for p in REPO.glob(f"*/**/src/{package}") if p.is_dir() and "node_modules" not in p.parts]
    return {
        str(f.relative_to(source.parent))
        for f in source.rglob("*")
        if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts
    }


@pytest.mark.parametrize("service", sorted(PROJECT_IMAGES))
def test_image_runs_unprivileged_with_only_its_own_packages_and_no_compiler(
    engine: DockerEngine, images: dict[str, float], service: str
) -> None:
    image = image_of(service)
    config = json.loads(engine.docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    as_default_user = engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", "import os; print(os.getuid())"
    )  # fmt: skip
    assert as_default_user.stdout.strip() == "10001"
    # As root, so that /root (mode 0700) is looked into too.
    result = engine.docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python", image,
        "-c", CHECK, SCRIPT[service], ",".join(FOREIGN[service]),
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert found["compilers"] == [], f"{image} has a compiler"
    assert found["pip_caches"] == []
    # services/Dockerfile's entry point links to the image's console script.
    assert config["Entrypoint"] == ["plantmon-service"] and found["link"] == SCRIPT[service] and found["entry"]
    assert found["modules"] > 3 and found["failed"] == {}, f"{image} cannot import: {found['failed']}"
    assert found["foreign"] == [], f"{image} carries another service's packages: {found['foreign']}"
    expected = package_data_in_the_repository(found["package"])
    if service == "alert_worker":
        assert {"plantmon_alerts/ui/templates/alerts.html", "plantmon_alerts/rules/default.yaml"} <= expected
    assert not expected - set(found["data"]), f"{image} lacks {sorted(expected - set(found['data']))}"


def test_image_sizes_are_reported(engine: DockerEngine, images: dict[str, float]) -> None:
    base = int(json.loads(engine.docker("image", "inspect", BASE_IMAGE).stdout)[0]["Size"])
    sizes = {}
    for service in sorted(PROJECT_IMAGES):
        sizes[service] = int(json.loads(engine.docker("image", "inspect", image_of(service)).stdout)[0]["Size"])
    print(f"base {BASE_IMAGE}: {base / 1e6:.0f} MB")
    for service, size in sizes.items():
        print(f"{image_of(service)}: {size / 1e6:.0f} MB, {(size - base) / 1e6:.0f} MB above the base")
    # Only the sensor image carries the audio stack (numba, llvmlite, scipy, librosa).
    assert max(sizes, key=lambda name: sizes[name]) == "sensors"
    assert all(size > base for size in sizes.values())
