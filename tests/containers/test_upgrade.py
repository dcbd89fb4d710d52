"""An upgrade as a plant does it: the stack runs at the previous commit's images, then ``up`` with
the new images on the same volumes. The migrations run once (none re-applied, the new ones
applied), the data and the volumes are kept, every service comes back healthy on the new images.

The previous commit is ``HEAD~1`` (``PLANTMON_UPGRADE_FROM`` names another): its tree is checked out
in a git worktree and its images are built from its own Dockerfiles, tagged ``previous``.
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
from plantmon_dev.procs import wait_until

from tests.containers.compose_support import CI_OVERRIDE, PROFILE_SERVICES, PROJECT_IMAGES, Compose
from tests.containers.conftest import read_env, stack_env_file
from tests.deploy.deploy_files import REPO

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
SERVICES = sorted(PROFILE_SERVICES["opc"] | {"alert_worker"})


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ref = os.environ.get("PLANTMON_UPGRADE_FROM", "HEAD~1")
    found = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO, capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.fail(f"no commit {ref} to upgrade from (a shallow clone? fetch with --depth 2 or more): {found.stderr}")
    tree = tmp_path_factory.mktemp("previous") / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), found.stdout.strip()], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    # The CI-only stand-ins are built from this tree; the old one may predate them.
    standins = tree / "tests" / "containers" / "standins"
    if not standins.exists():
        shutil.copytree(REPO / "tests" / "containers" / "standins", standins)
    try:
        yield tree
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


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
            wait_until(
                lambda: (conn.execute("SELECT count(*) FROM samples").fetchone() or (0,))[0] > 0,
                120,
                "old stack stores",
            )
            applied = dict(conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall())
            first = conn.execute("SELECT min(time), count(*) FROM samples").fetchone()
        old_images = image_ids(old)
        assert first is not None

        new.up("fullstack", SERVICES)  # what `task deploy_full_stack` does after a pull: no down
        new.wait_healthy(SERVICES, timeout=300)
        new_images = image_ids(new)
        for service in PROJECT_IMAGES:
            wanted = json.loads(engine.docker("image", "inspect", f"{PROJECT_IMAGES[service]}:dev").stdout)[0]["Id"]
            assert new_images[service] == wanted, f"{service} still runs {old_images[service]}"
        assert new.container("migrate")["State"]["ExitCode"] == 0
        with postgres(new) as conn:
            rows = conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall()
            paths = {path for (path,) in conn.execute("SELECT DISTINCT storage_path FROM schema_migrations")}
            names = [name for name, _ in rows]
            again = conn.execute("SELECT min(time), count(*) FROM samples WHERE time <= %s", (first[0],)).fetchone()
            wait_until(
                lambda: (conn.execute("SELECT count(*) FROM samples").fetchone() or (0,))[0] > first[1],
                120,
                "the new stack stores",
            )
        assert len(names) == len(set(names))
        # Applied once: what the old images applied is untouched, whatever the new ones add is new.
        assert {name: stamp for name, stamp in rows if name in applied} == applied
        # Every migration the new image ships for this storage path (the stand-in is plain PostgreSQL).
        assert paths == {"plain"}
        files = [path.name for path in (REPO / "db/src/plantmon_db/migrations").glob("*.sql")]
        shipped = {name.split(".")[0] for name in files if not name.endswith(".timescale.sql")}
        assert {name.split(".")[0] for name in names} == shipped
        assert again is not None and again[0] == first[0] and again[1] >= first[1]
    finally:
        new.down(volumes=True)
