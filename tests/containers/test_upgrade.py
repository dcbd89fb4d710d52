"""An upgrade as a plant does it: the stack runs at the previous commit's images, then ``up`` with
the new images on the same volumes. The migrations run once (none re-applied, the new ones
applied), the data and the volumes are kept, every service comes back healthy on the new images.

"The previous commit" is the one just before the newest change to what goes into an image (the
services' and db's sources, Dockerfiles and locks), so that the upgrade really changes images;
``PLANTMON_UPGRADE_FROM`` names another. Its tree is checked out in a git worktree and its images
are built from its own Dockerfiles, tagged ``previous``. Commits before FIRST_BUILDABLE cannot be
upgraded from: their migrate image did not build (every image installed the sensors' packages,
and spidev needs a compiler the migrate image has not).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plantmon_dev.docker_engine import DockerEngine
from plantmon_dev.waiting import eventually_sync

from tests.containers.compose_support import CI_OVERRIDE, PROFILE_SERVICES, PROJECT_IMAGES, Compose
from tests.containers.conftest import read_env, stack_env_file
from tests.deploy.deploy_files import REPO

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800, func_only=True)]
SERVICES = sorted(PROFILE_SERVICES["opc"] | {"alert_worker"})
FIRST_BUILDABLE = "41c7895ed9f3bb995cf5572751b83fe1224298ad"
IMAGE_INPUTS = ("requirements/images", "services", "db", ":(exclude)services/*/tests/**", ":(exclude)db/tests/**")


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def previous_commit() -> str:
    if os.environ.get("PLANTMON_UPGRADE_FROM"):
        found = git("rev-parse", "--verify", f"{os.environ['PLANTMON_UPGRADE_FROM']}^{{commit}}")
        assert found.returncode == 0, found.stderr
        return found.stdout.strip()
    if git("rev-parse", "--verify", f"{FIRST_BUILDABLE}^{{commit}}").returncode != 0:
        pytest.fail(f"the history lacks {FIRST_BUILDABLE} (a shallow clone? fetch more of it)")
    newest_change = git("log", "-1", "--format=%H", "HEAD", "--", *IMAGE_INPUTS).stdout.strip()
    before = git("rev-parse", "--verify", f"{newest_change}~1").stdout.strip()
    if not before or git("merge-base", "--is-ancestor", FIRST_BUILDABLE, before).returncode != 0:
        pytest.fail(f"no buildable commit before {newest_change} to upgrade from (first: {FIRST_BUILDABLE})")
    return before


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    commit = previous_commit()
    print(f"upgrading from {commit}")
    tree = tmp_path_factory.mktemp("previous") / "tree"
    added = git("worktree", "add", "--detach", str(tree), commit)
    assert added.returncode == 0, added.stderr
    # The CI-only override is this commit's, so its stand-ins are too (the old tree may predate
    # them or lay them out differently).
    standins = tree / "tests" / "containers" / "standins"
    shutil.rmtree(standins, ignore_errors=True)
    shutil.copytree(REPO / "tests" / "containers" / "standins", standins)
    try:
        yield tree
    finally:
        git("worktree", "remove", "--force", str(tree))


def postgres(compose: Compose) -> Any:
    return compose.database("postgres", read_env(compose.env_file)["POSTGRES_PASSWORD"])


def image_ids(compose: Compose) -> dict[str, str]:
    return {name: item["Image"] for name, item in compose.containers().items() if name in PROJECT_IMAGES}


def test_upgrade_from_the_previous_commits_images_keeps_data_and_runs_migrations_once(
    engine: DockerEngine, images: dict[str, float], previous_tree: Path, tmp_path: Path
) -> None:
    env_file = stack_env_file(tmp_path)
    old = Compose(
        engine, "plantmon-upgrade", env_file, files=(previous_tree / "docker-compose.yaml",
        previous_tree / "docker-compose.sim.yaml", CI_OVERRIDE), directory=previous_tree,
        env={"PLANTMON_VERSION": "previous"},
    )  # fmt: skip
    new = Compose(engine, "plantmon-upgrade", env_file)
    old.down(volumes=True)
    try:
        old.run("--profile", "fullstack", "build", "--parallel", *sorted(PROJECT_IMAGES), timeout=3600)
        old.up("fullstack", SERVICES)
        old.wait_healthy(SERVICES, timeout=300)
        with postgres(old) as conn:
            eventually_sync(
                lambda: (conn.execute("SELECT count(*) FROM samples").fetchone() or (0,))[0] > 0,
                timeout=120,
                what="old stack stores",
            )
            applied = dict(conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall())
            first = conn.execute("SELECT min(time), max(time), count(*) FROM samples").fetchone()
        old_images = image_ids(old)
        old_containers = {name: item["Id"] for name, item in old.containers().items()}
        assert first is not None

        new.up("fullstack", SERVICES)  # what `task deploy_full_stack` does after a pull: no down
        new.wait_healthy(SERVICES, timeout=300)
        new_images = image_ids(new)
        changed = set()
        for service in PROJECT_IMAGES:
            wanted = json.loads(engine.docker("image", "inspect", f"{PROJECT_IMAGES[service]}:dev").stdout)[0]["Id"]
            assert new_images[service] == wanted, f"{service} still runs {old_images[service]}"
            if wanted != old_images[service]:
                changed.add(service)
                assert new.container(service)["Id"] != old_containers[service], f"{service} was not recreated"
        assert changed, "the previous commit's images are the new ones: nothing was upgraded"
        print(f"upgraded images: {sorted(changed)}")
        assert new.container("migrate")["State"]["ExitCode"] == 0
        with postgres(new) as conn:
            rows = conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall()
            paths = {path for (path,) in conn.execute("SELECT DISTINCT storage_path FROM schema_migrations")}
            names = [name for name, _ in rows]
            # The rows the old stack had (up to its newest) are all still there.
            again = conn.execute("SELECT min(time), count(*) FROM samples WHERE time <= %s", (first[1],)).fetchone()
            eventually_sync(
                lambda: (conn.execute("SELECT count(*) FROM samples").fetchone() or (0,))[0] > first[2],
                timeout=120,
                what="the new stack stores",
            )
        assert len(names) == len(set(names))
        # Applied once: what the old images applied is untouched, whatever the new ones add is new.
        assert {name: stamp for name, stamp in rows if name in applied} == applied
        # Every migration the new image ships for this storage path (the stand-in is plain PostgreSQL).
        assert paths == {"plain"}
        files = [path.name for path in (REPO / "db/src/plantmon_db/migrations").glob("*.sql")]
        shipped = {name.split(".")[0] for name in files if not name.endswith(".timescale.sql")}
        assert {name.split(".")[0] for name in names} == shipped
        assert again is not None and again[0] == first[0] and again[1] >= first[2]
    finally:
        new.down(volumes=True)
