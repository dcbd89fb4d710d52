"""A small real upstream for the DMZ tests: answers every path with 200 and echoes what it saw."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class EchoUpstream:
    """An HTTP server on 127.0.0.1 that records each request it receives."""

    server: ThreadingHTTPServer
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def echo_handler(upstream: EchoUpstream) -> type[BaseHTTPRequestHandler]:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the DMZ's upstream pool expects

        def _answer(self) -> None:
            upstream.requests.append((self.command, self.path))
            body = json.dumps(
                {"method": self.command, "path": self.path, "authorization": self.headers.get("Authorization")}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    return Echo


@pytest.fixture
def echo_upstream() -> Iterator[EchoUpstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    upstream = EchoUpstream(server)
    server.RequestHandlerClass = echo_handler(upstream)
    thread = threading.Thread(target=server.serve_forever, name="echo-upstream", daemon=True)
    thread.start()
    yield upstream
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
