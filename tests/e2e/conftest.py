"""One running stack for the end-to-end suites (the pipeline's checks and the examples)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from plantmon_dev.stack import Stack

from tests.e2e.support import new_stack


@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    with new_stack() as running:
        yield running
