"""``python -m bench [--smoke]``: run every benchmark module in turn."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    args = sys.argv[1:]
    failed = 0
    for module in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])):
        if module.startswith("_") or module == "common":
            continue
        print(f"\n=== bench.{module} {' '.join(args)}", flush=True)
        bench = importlib.import_module(f"bench.{module}")
        if bench.main(args) != 0:
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
