"""A local Azure Event Hubs stand-in: a real AMQP 1.0 peer (python-qpid-proton) behind a relay.

The real, unpatched ``azure-eventhub`` SDK talks to it over loopback (Azure and its Docker-only
emulator are out of reach here, and a mock of the SDK's objects proves nothing about the wire):

``SDK --TCP--> FrameRelay --TCP--> proton Container (EventHubPeerHandler)``

* The peer offers SASL ANONYMOUS; answers CBS ``put-token`` on ``$cbs`` (status 200, the reply's
  ``correlation_id`` is the request's ``message_id``); answers ``$management`` READ with the hub's
  partition ids; accepts the sender link on the hub address (echoing the termini and granting a
  ``max_message_size``, which becomes the SDK's batch limit); settles each delivery as accepted
  (or rejected, with a full error, while :meth:`EventHubPeer.reject_next` says so) and unpacks
  batches (message format 0x80013700: data sections that each hold an encoded message).
* azure-eventhub 5.15.1 reads performative fields by position and fails on proton's compact lists
  (trailing nulls omitted, which AMQP allows; fixed upstream in Azure/azure-sdk-for-python#47660).
  The relay therefore re-encodes every frame from the peer to the SDK with every field of every
  performative (and of its nested error, terminus and outcome lists) present. Frames from the SDK
  to the peer pass unchanged.
* An outage is the relay's front door closed: connections refused, open ones cut
  (:meth:`EventHubPeer.stop_front` / :meth:`EventHubPeer.start_front`), on the same port.

Connection string: :attr:`EventHubPeer.connection_string` (``UseDevelopmentEmulator=true`` turns
TLS off and makes the SDK use the port).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from plantmon_dev.procs import free_port
from proton import Condition, Data, Delivery, Described, Message, symbol, timestamp
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from services.alert_worker.tests.loopback_support import LoopbackServer, pipe, splice

logger = logging.getLogger(__name__)

BATCH_FORMAT = 0x80013700
MAX_MESSAGE_SIZE = 1024 * 1024

# Descriptor code -> number of fields of the described list (AMQP 1.0 spec, parts 2, 3 and 5).
FIELD_COUNTS = {
    0x10: 10,  # open
    0x11: 8,  # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,  # disposition
    0x16: 3,  # detach
    0x17: 1,  # end
    0x18: 1,  # close
    0x1D: 3,  # error
    0x23: 2,  # received
    0x24: 0,  # accepted
    0x25: 1,  # rejected
    0x26: 0,  # released
    0x27: 3,  # modified
    0x28: 11,  # source
    0x29: 7,  # target
    0x40: 1,  # sasl-mechanisms
    0x41: 3,  # sasl-init
    0x42: 1,  # sasl-challenge
    0x43: 1,  # sasl-response
    0x44: 2,  # sasl-outcome
}


# -- AMQP re-encoding (the relay) ---------------------------------------------------------------


@dataclass
class _Described:
    descriptor: bytes  # raw encoding of the descriptor
    code: int | None  # the ulong code when it is one
    value: Any  # _List or bytes


@dataclass
class _List:
    items: list[Any]


def _width(constructor: int) -> int:
    return {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}[constructor >> 4]


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One encoded value at ``pos``: described values and lists as nodes, the rest as raw bytes."""
    c = buf[pos]
    if c == 0x00:
        start = pos + 1
        _, after = _parse(buf, start)
        raw_descriptor = buf[start:after]
        code = None
        if raw_descriptor[0] == 0x53:
            code = raw_descriptor[1]
        elif raw_descriptor[0] == 0x44:
            code = 0
        elif raw_descriptor[0] == 0x80:
            code = struct.unpack(">Q", raw_descriptor[1:9])[0]
        value, end = _parse(buf, after)
        return _Described(raw_descriptor, code, value), end
    if c == 0x45:
        return _List([]), pos + 1
    if c in (0xC0, 0xD0):
        if c == 0xC0:
            size, count, body = buf[pos + 1], buf[pos + 2], pos + 3
            end = pos + 2 + size
        else:
            size, count = struct.unpack(">II", buf[pos + 1 : pos + 9])
            body, end = pos + 9, pos + 5 + size
        items = []
        for _ in range(count):
            item, body = _parse(buf, body)
            items.append(item)
        return _List(items), end
    hi = c >> 4
    if hi in (0xA, 0xC, 0xE):
        return buf[pos : pos + 2 + buf[pos + 1]], pos + 2 + buf[pos + 1]
    if hi in (0xB, 0xD, 0xF):
        size = struct.unpack(">I", buf[pos + 1 : pos + 5])[0]
        return buf[pos : pos + 5 + size], pos + 5 + size
    width = _width(c)
    return buf[pos : pos + 1 + width], pos + 1 + width


def _encode(node: Any, pad_to: int | None = None) -> bytes:
    if isinstance(node, bytes):
        return node
    if isinstance(node, _Described):
        value = node.value
        if isinstance(value, _List) and node.code in FIELD_COUNTS:
            return b"\x00" + node.descriptor + _encode(value, FIELD_COUNTS[node.code])
        return b"\x00" + node.descriptor + _encode(value)
    items = [_encode(item) for item in node.items]
    if pad_to is not None and len(items) < pad_to:
        items += [b"\x40"] * (pad_to - len(items))
    body = b"".join(items)
    return b"\xd0" + struct.pack(">II", len(body) + 4, len(items)) + body


def reencode_frame(frame: bytes) -> bytes:
    """A frame with its performative's lists (nested ones too) spelled out in full."""
    doff = frame[4] * 4
    body = frame[doff:]
    if not body:
        return frame  # an empty (heartbeat) frame
    performative, end = _parse(body, 0)
    new_body = _encode(performative) + body[end:]
    header = frame[4:doff]
    return struct.pack(">I", 4 + len(header) + len(new_body)) + header + new_body


class FrameRelay(LoopbackServer):
    """An asyncio TCP relay: SDK -> peer unchanged, peer -> SDK re-encoded frame by frame."""

    def __init__(self, upstream_port: int, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(port, host)
        self.upstream_port = upstream_port
        self.connections = 0
        self.websocket_requests: list[dict[str, str]] = []

    async def stop(self) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(4)
        except (OSError, asyncio.IncompleteReadError):
            writer.transport.abort()
            return
        websocket = first == b"GET "
        if websocket:
            # AMQP over WebSockets (subprotocol AMQPWSB10): answer the upgrade, then unwrap frames.
            head = first + await reader.readuntil(b"\r\n\r\n")
            headers = _http_headers(head)
            self.websocket_requests.append(headers)
            accept = base64.b64encode(
                hashlib.sha1(headers["sec-websocket-key"].encode() + WS_GUID, usedforsecurity=False).digest()
            ).decode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n".encode()
            )
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}

        def to_client(data: bytes) -> bytes:
            return _ws_frame(0x2, data) if websocket else data

        async def forward(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            if not websocket:
                dst.write(first)
                await pipe(src, dst)
                return
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                while True:
                    opcode, payload = await _read_ws_frame(src)
                    if opcode in (0x0, 0x1, 0x2):
                        dst.write(payload)
                        await dst.drain()
                    elif opcode == 0x9:  # ping: the SDK's heartbeat
                        writer.write(_ws_frame(0xA, payload))
                    elif opcode == 0x8:
                        writer.write(_ws_frame(0x8, payload))
                        break
            dst.transport.abort()

        async def backward(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                while True:
                    head = await src.readexactly(4)
                    if head == b"AMQP":  # a protocol header (SASL, then AMQP)
                        dst.write(to_client(head + await src.readexactly(4)))
                    else:
                        size = struct.unpack(">I", head)[0]
                        dst.write(to_client(reencode_frame(head + await src.readexactly(size - 4))))
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(forward(reader, up_writer), backward(up_reader, writer))
        self._writers -= {writer, up_writer}


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _http_headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {"": lines[0]}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return headers


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A server-to-client WebSocket frame (FIN set, not masked)."""
    size = len(payload)
    if size < 126:
        header = struct.pack(">BB", 0x80 | opcode, size)
    elif size < 65536:
        header = struct.pack(">BBH", 0x80 | opcode, 126, size)
    else:
        header = struct.pack(">BBQ", 0x80 | opcode, 127, size)
    return header + payload


async def _read_ws_frame(src: asyncio.StreamReader) -> tuple[int, bytes]:
    """One client-to-server frame: (opcode, unmasked payload)."""
    b0, b1 = await src.readexactly(2)
    size = b1 & 0x7F
    if size == 126:
        size = struct.unpack(">H", await src.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack(">Q", await src.readexactly(8))[0]
    mask = await src.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = await src.readexactly(size)
    return b0 & 0x0F, bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


class HttpProxy(LoopbackServer):
    """A forward HTTP proxy with Basic authentication (CONNECT and absolute-form requests).

    ``requests`` records each request line with its ``Proxy-Authorization`` header.
    """

    def __init__(self, username: str, password: str) -> None:
        super().__init__(free_port())
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.requests: list[tuple[str, str | None]] = []

    async def stop(self) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()
            return
        headers = _http_headers(head)
        request_line = headers[""]
        auth = headers.get("proxy-authorization")
        self.requests.append((request_line, auth))
        if auth != self.expected:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
            writer.close()
            return
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            first = b""
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
            lines = head.decode("latin-1").split("\r\n")
            lines[0] = f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} {version}"
            kept = [line for line in lines if not line.lower().startswith("proxy-")]
            first = "\r\n".join(kept).encode("latin-1")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            writer.close()
            return
        self._writers.add(up_writer)
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(first)
        await splice((reader, writer), (up_reader, up_writer))


# -- the proton peer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedEvent:
    """One event as the hub received it (batches unpacked)."""

    body: bytes
    properties: dict[str, Any]
    annotations: dict[str, Any]
    received_at: float  # time.time()

    @property
    def partition_key(self) -> str | None:
        key = self.annotations.get("x-opt-partition-key")
        return str(key) if key is not None else None


def _sections(raw: bytes) -> Iterator[Any]:
    data = Data()
    pos = 0
    while pos < len(raw):
        data.clear()
        used = data.decode(raw[pos:])
        pos += used
        data.rewind()
        data.next()
        section = data.get_object()
        # Blobs are views into the codec's buffer: copy before it is reused.
        if isinstance(section, Described) and isinstance(section.value, memoryview):
            section = Described(section.descriptor, section.value.tobytes())
        yield section


def _is_encoded_message(value: Any) -> bool:
    if not isinstance(value, bytes | memoryview):
        return False
    raw = bytes(value)
    return len(raw) > 3 and raw[0] == 0x00 and raw[1] == 0x53 and 0x70 <= raw[2] <= 0x78


def unpack(raw: bytes) -> list[Message]:
    """The messages of one delivery: a batch's data sections, or the delivery itself.

    proton's Python API does not expose a delivery's message format, so a batch (format
    0x80013700) is recognised by its body: data sections that each hold an encoded message.
    """
    sections = list(_sections(raw))
    data = [s.value for s in sections if isinstance(s, Described) and s.descriptor == 0x75]
    blobs = [bytes(d) for d in data if isinstance(d, bytes | memoryview)]
    if data and len(blobs) == len(data) and all(_is_encoded_message(b) for b in blobs):
        messages = []
        for blob in blobs:
            inner = Message()
            inner.decode(blob)
            messages.append(inner)
        return messages
    message = Message()
    message.decode(raw)
    return [message]


def _body_bytes(message: Message) -> bytes:
    body = message.body
    if isinstance(body, memoryview):
        return body.tobytes()
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return repr(body).encode()


def _plain(mapping: Any) -> dict[str, Any]:
    return {str(k): v for k, v in (mapping or {}).items()}


class EventHubPeerHandler(MessagingHandler):
    """Runs inside the proton container thread; see the module docstring."""

    def __init__(self, peer: EventHubPeer) -> None:
        super().__init__(prefetch=100, auto_accept=False, auto_settle=True)
        self.peer = peer
        self.reply_links: dict[tuple[Any, str], Any] = {}

    def on_start(self, event: Any) -> None:
        self.peer.acceptor = event.container.listen(f"127.0.0.1:{self.peer.backend_port}")
        self.peer.started.set()

    def on_stop_peer(self, event: Any) -> None:
        if self.peer.acceptor is not None:
            self.peer.acceptor.close()
        self.peer.container.stop()

    def on_connection_bound(self, event: Any) -> None:
        event.transport.sasl().allowed_mechs("ANONYMOUS")

    def on_link_opening(self, event: Any) -> None:
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        if link.is_sender:
            # The SDK's reply (receiver) link: replies go to its source address.
            self.reply_links[(link.connection, str(link.remote_source.address))] = link
        else:
            link.max_message_size = self.peer.max_message_size
            link.flow(100)
        link.open()

    def on_link_closing(self, event: Any) -> None:
        event.link.close()

    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        link = event.link
        if link.is_sender:
            return
        if delivery.partial:
            return
        raw = link.recv(delivery.pending)
        link.advance()
        address = str(link.remote_target.address or "")
        if address.endswith("$cbs"):
            self._reply(delivery, raw, address, cbs=True)
        elif address.endswith("$management"):
            self._reply(delivery, raw, address, cbs=False)
        else:
            self._store(delivery, raw)
        if link.credit < 50:
            link.flow(100)

    def _reply(self, delivery: Delivery, raw: bytes, node: str, *, cbs: bool) -> None:
        request = Message()
        request.decode(raw)
        props = _plain(request.properties)
        reply = Message(
            correlation_id=request.id,
            address=request.reply_to,
            properties={"status-code": 200, "status-description": "OK"},
        )
        body: dict[Any, Any] | None = None
        if cbs:
            pass  # a put-token needs only its status
        elif props.get("operation") == "READ" and "partition" in props:
            body = {
                symbol("name"): self.peer.hub,
                symbol("partition"): str(props["partition"]),
                symbol("begin_sequence_number"): 0,
                symbol("last_enqueued_sequence_number"): 0,
                symbol("last_enqueued_offset"): "0",
                symbol("is_partition_empty"): True,
                symbol("last_enqueued_time_utc"): timestamp(int(time.time() * 1000)),
            }
        else:
            body = {
                symbol("name"): self.peer.hub,
                symbol("created_at"): timestamp(int(time.time() * 1000)),
                symbol("partition_ids"): list(self.peer.partition_ids),
            }
        if body is not None:
            reply.body = body
        self.peer.requests.append(("cbs" if cbs else "management", props))
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        # The SDK's management links receive replies on a link whose source is the node itself.
        link = self.reply_links.get((delivery.link.connection, str(request.reply_to))) or self.reply_links.get(
            (delivery.link.connection, node)
        )
        if link is None:
            logger.error("no reply link for %s on %s", request.reply_to, node)
            return
        link.send(reply)

    def _store(self, delivery: Delivery, raw: bytes) -> None:
        with self.peer.lock:
            reject = self.peer.rejections > 0
            if reject:
                self.peer.rejections -= 1
        if reject:
            delivery.local.condition = Condition(
                "amqp:internal-error", "rejected by the test peer", {symbol("reason"): "test"}
            )
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        now = time.time()
        received = [
            ReceivedEvent(_body_bytes(m), _plain(m.properties), _plain(m.annotations), now) for m in unpack(raw)
        ]
        with self.peer.lock:
            self.peer.received.extend(received)
            self.peer.deliveries += 1
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()


@dataclass
class EventHubPeer:
    """The proton peer (in a thread) and its relay (in another); use as a context manager."""

    hub: str = "alerts"
    partition_ids: tuple[str, ...] = ("0", "1")
    max_message_size: int = MAX_MESSAGE_SIZE
    port: int = field(default_factory=free_port)
    backend_port: int = field(default_factory=free_port)
    # Where the SDK connects: the relay listens on ``front_host``; the connection string names
    # ``advertised_host`` (a container reaches a peer on the engine's bridge by another name).
    front_host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"
    received: list[ReceivedEvent] = field(default_factory=list, init=False)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list, init=False)
    deliveries: int = field(default=0, init=False)
    rejections: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.acceptor: Any = None
        self._injector = EventInjector()
        self.container = Container(EventHubPeerHandler(self))
        self.container.selectable(self._injector)
        self._proton_thread = threading.Thread(target=self.container.run, name="amqp-peer", daemon=True)
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="amqp-relay", daemon=True)
        self.relay = FrameRelay(self.backend_port, self.port, self.front_host)

    @property
    def connection_string(self) -> str:
        return (
            f"Endpoint=sb://{self.advertised_host}:{self.port};SharedAccessKeyName=k;SharedAccessKey=v;"
            f"EntityPath={self.hub};UseDevelopmentEmulator=true"
        )

    def _in_loop(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> None:
        self._proton_thread.start()
        if not self.started.wait(10):
            raise RuntimeError("the AMQP peer did not start")
        self._loop_thread.start()
        self.start_front()

    def start_front(self) -> None:
        """Open the relay: the hub is reachable."""
        self._in_loop(self.relay.start())

    def stop_front(self) -> None:
        """Close the relay and cut its connections: the hub is unreachable."""
        self._in_loop(self.relay.stop())

    def reject_next(self, count: int) -> None:
        """Reject the next ``count`` deliveries on the hub (with a full error)."""
        with self.lock:
            self.rejections = count

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_front()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)
        self._injector.trigger(ApplicationEvent("stop_peer"))
        self._proton_thread.join(10)
        self._loop.close()

    def events(self) -> list[ReceivedEvent]:
        with self.lock:
            return list(self.received)

    def __enter__(self) -> EventHubPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m services.alert_worker.tests.amqp_peer``: run a peer and print what arrives."""
    logging.basicConfig(level=logging.INFO)
    with EventHubPeer() as peer:
        print(peer.connection_string, flush=True)
        seen = 0
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(0.5)
                events = peer.events()
                for event in events[seen:]:
                    print(event.partition_key, event.properties, event.body[:200], flush=True)
                seen = len(events)


if __name__ == "__main__":
    main()


__all__ = ["EventHubPeer", "ReceivedEvent", "reencode_frame", "unpack", "uuid"]
