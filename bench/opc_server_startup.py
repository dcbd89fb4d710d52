"""OPC UA server start: from launching the process to the first Good value a secure client reads.

The server (``python -m plantmon_opc_server``, secure mode) polls a synthetic sensor API serving
the real plant's 49 tags. Measured: a cold start (no certificate yet: it is generated) and a
warm start (certificate reused), each to the first Good value of the last tag read by a client
over Basic256Sha256 SignAndEncrypt. Ceiling, in the same run: a bare asyncua server process with
49 plain variables (same security), to its first value; and asyncua's ``Server.init()`` alone
(the standard address space), which dominates both.

``python -m bench.opc_server_startup [--smoke]``. Target: under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asyncua import Server, ua
from plantmon_common.opcua import OpcUaError, connect
from plantmon_dev.procs import free_port, stop_process

from bench.opc_server_throughput import (
    NAMESPACE,
    client_settings,
    peer,
    server_env,
    tag_path,
)

logger = logging.getLogger(__name__)
PLANT_TAGS = 49
TARGET_S = 5.0


async def first_value_after(args: list[str], env: dict[str, str], endpoint: str, workdir: Path, log: str) -> float:
    """Seconds from launching ``args`` to a Good value of the last tag read by a secure client."""
    started = time.perf_counter()
    with (workdir / log).open("ab") as out:
        cmd = [sys.executable, *args]
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + 120
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited with {proc.returncode}; see {workdir / log}")
            try:
                async with connect(client_settings(endpoint, workdir)) as client:
                    ns = await client.get_namespace_index(NAMESPACE)
                    node = client.get_node(ua.NodeId(tag_path(PLANT_TAGS - 1), ns))
                    while time.perf_counter() < deadline:
                        with contextlib.suppress(ua.UaError):
                            dv = await node.read_data_value(raise_on_bad_status=False)
                            if dv.StatusCode.is_good() and dv.Value.Value is not None:
                                return time.perf_counter() - started
                        await asyncio.sleep(0.02)
            except (OpcUaError, OSError, ua.UaError, TimeoutError):
                await asyncio.sleep(0.05)
        raise TimeoutError("no Good value within 120 s")
    finally:
        stop_process(proc, timeout=15)


async def asyncua_init_seconds() -> float:
    started = time.perf_counter()
    server = Server()
    await server.init()
    return time.perf_counter() - started


def init_in_child() -> float:
    """``Server.init()`` in a fresh interpreter (imports warm, address space cold)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.opc_server_startup", "init"], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


async def run(rounds: int, smoke: bool = False) -> dict[str, list[float]]:
    """``rounds`` of: cold start, warm start, bare asyncua, ``Server.init()`` (smoke: cold and bare once)."""
    results: dict[str, list[float]] = {"cold": [], "warm": [], "bare": [], "init": []}
    with tempfile.TemporaryDirectory(prefix="plantmon-bench-start-") as tmp:
        workdir = Path(tmp)
        with peer(PLANT_TAGS, workdir) as url:
            for n in range(rounds):
                run_dir = workdir / f"run{n}"
                run_dir.mkdir()
                for kind in ("cold",) if smoke else ("cold", "warm"):
                    port = free_port()
                    endpoint = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
                    env = server_env(url, endpoint, 1.0, run_dir, free_port())
                    seconds = await first_value_after(
                        ["-m", "plantmon_opc_server"], env, endpoint, run_dir, f"opc_server_{kind}.log"
                    )
                    results[kind].append(seconds)
                port = free_port()
                endpoint = f"opc.tcp://127.0.0.1:{port}/freeopcua/server/"
                pki = str(run_dir / "pki-bare")
                bare_args = ["-m", "bench.opc_server_throughput", "bare", str(PLANT_TAGS), "1", endpoint, pki]
                results["bare"].append(await first_value_after(bare_args, {}, endpoint, run_dir, "bare.log"))
                if not smoke:
                    results["init"].append(init_in_child())
    return results


def main(argv: list[str]) -> int:
    if argv and argv[0] == "init":
        print(asyncio.run(asyncua_init_seconds()))
        return 0
    parser = argparse.ArgumentParser(prog="bench.opc_server_startup")
    parser.add_argument("--smoke", action="store_true", help="one round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(run(1 if args.smoke else args.rounds, smoke=args.smoke))
    results = {kind: values for kind, values in results.items() if values}
    best = {kind: min(values) for kind, values in results.items()}
    for kind, values in results.items():
        print(f"{kind:5s}: " + ", ".join(f"{v:.2f} s" for v in values) + f"  (best {best[kind]:.2f} s)")
    start = best.get("warm", best["cold"])
    print(
        f"server start to first Good value: {start:.2f} s (target {TARGET_S:.0f} s); bare asyncua to first "
        f"value {best['bare']:.2f} s (ratio {start / best['bare']:.2f})"
        + (f"; asyncua Server.init() alone {best['init']:.2f} s" if "init" in best else "")
    )
    if not args.smoke and best["warm"] > TARGET_S:
        print(f"FAIL: warm start {best['warm']:.2f} s is above the {TARGET_S:.0f} s target")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
