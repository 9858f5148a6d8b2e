"""A scripted MQTT broker on a localhost socket, for what a real broker won't do.

Mosquitto never sends garbage, never stalls a CONNACK, never answers a publish with
"quota exceeded". This fake speaks enough real MQTT (3.1.1 and 5) on a TCP socket for
a test to script those answers: each accepted connection runs ``script(peer)``, which
reads the client's packets and writes whatever bytes the test wants.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


@attrs.frozen
class Packet:
    type: int
    flags: int
    body: bytes

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    def publish_topic_and_mid(self) -> tuple[str, int | None]:
        length = int.from_bytes(self.body[:2])
        topic = self.body[2 : 2 + length].decode()
        if self.qos == 0:
            return topic, None
        return topic, int.from_bytes(self.body[2 + length : 4 + length])

    def mid(self) -> int:
        """The packet identifier of a SUBSCRIBE, PUBACK, PUBREL...: the body's first two bytes."""
        return int.from_bytes(self.body[:2])


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(type_: int, flags: int, body: bytes) -> bytes:
    return bytes([type_ << 4 | flags]) + encode_length(len(body)) + body


class FakePeer:
    """One client connection, seen from the broker's side."""

    def __init__(self, stream: trio.abc.Stream, index: int) -> None:
        self.stream = stream
        self.index = index  # 1 for the first connection, 2 for the next...
        self.mqtt5 = False
        self._buffer = bytearray()

    async def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise EOFError("client closed the connection")
            self._buffer += chunk

    async def receive(self) -> Packet:
        await self._fill(2)
        length, multiplier, pos = 0, 1, 1
        while True:
            await self._fill(pos + 1)
            byte = self._buffer[pos]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            pos += 1
            if not byte & 0x80:
                break
        await self._fill(pos + length)
        header, body = self._buffer[0], bytes(self._buffer[pos : pos + length])
        del self._buffer[: pos + length]
        return Packet(header >> 4, header & 0x0F, body)

    async def receive_type(self, type_: int) -> Packet:
        """The next packet other than PINGREQ (answered), which must be of ``type_``."""
        while True:
            got = await self.receive()
            if got.type == PINGREQ:
                await self.send(packet(PINGRESP, 0, b""))
                continue
            assert got.type == type_, f"expected packet type {type_}, got {got}"
            return got

    async def accept_connect(self, *, properties: bytes = b"") -> None:
        """Read CONNECT, answer CONNACK Success (with MQTT 5 ``properties``, encoded)."""
        connect = await self.receive_type(CONNECT)
        self.mqtt5 = connect.body[6] == 5
        await self.send(self.connack(0, properties=properties))

    def connack(self, reason: int, *, properties: bytes = b"") -> bytes:
        if self.mqtt5:
            return packet(
                CONNACK, 0, bytes([0, reason]) + encode_length(len(properties)) + properties
            )
        return packet(CONNACK, 0, bytes([0, reason]))

    def ack(self, type_: int, mid: int, reason: int = 0) -> bytes:
        """PUBACK/PUBREC/PUBCOMP/SUBACK-less acks for ``mid`` (MQTT 5: with ``reason``)."""
        flags = 2 if type_ == PUBREL else 0
        if self.mqtt5:
            return packet(type_, flags, mid.to_bytes(2) + bytes([reason, 0]))
        return packet(type_, flags, mid.to_bytes(2))

    def publish(self, topic: bytes, payload: bytes, *, qos: int, mid: int) -> bytes:
        body = len(topic).to_bytes(2) + topic
        if qos:
            body += mid.to_bytes(2)
        if self.mqtt5:
            body += b"\x00"
        return packet(PUBLISH, qos << 1, body + payload)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def serve(self) -> None:
        """Behave as a broker that takes every publish and answers pings, until closed."""
        while True:
            got = await self.receive()
            if got.type == PINGREQ:
                await self.send(packet(PINGRESP, 0, b""))
            elif got.type == PUBLISH and got.qos == 1:
                await self.send(self.ack(PUBACK, got.publish_topic_and_mid()[1] or 0))
            elif got.type == DISCONNECT:
                return

    async def wait_closed(self) -> None:
        """Read until the client closes the connection."""
        try:
            while await self.stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass


Script = Callable[[FakePeer], Awaitable[None]]


class FakeBroker:
    """Runs ``script`` for each connection; over TLS if given a server ``ssl_context``."""

    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.port = 0
        self.connections = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners: list[Any]
        if self.ssl_context is None:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
        else:
            listeners = await trio.open_ssl_over_tcp_listeners(
                0, self.ssl_context, host="127.0.0.1"
            )
            self.port = listeners[0].transport_listener.socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        async with stream:
            try:
                await self.script(FakePeer(stream, self.connections))
            except (EOFError, trio.BrokenResourceError):
                pass  # the client went away: what scripts check for comes before
