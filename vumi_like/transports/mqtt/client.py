"""``TrioMqttClient``: MQTT for trio, on paho-mqtt 2 driven by trio's own I/O.

paho-mqtt is the most complete Python MQTT client (MQTT 3.1.1 and 5, TLS, sessions),
but it brings its own loop: ``loop_start()`` runs it in a thread, ``loop_forever()``
blocks. The asyncio clients (aiomqtt, gmqtt) are asyncio-only. paho also offers an
external-loop interface, and that is what this module drives, so that no paho thread
runs and every paho call but one (opening the connection, below) happens in the trio
thread:

* ``on_socket_open`` / ``on_socket_close`` tell us the socket paho reads and writes;
  ``on_socket_register_write`` / ``on_socket_unregister_write`` tell us whether paho
  has bytes waiting to be written.
* Three tasks per connection: a reader (``wait_readable`` then ``loop_read()``, and
  again while TLS holds decrypted bytes that the socket's readiness cannot show), a
  writer (while paho wants to write: ``wait_writable`` then ``loop_write()``), and a
  keepalive task calling ``loop_misc()`` every second, as paho's own loop does.
* When paho closes its socket, ``on_socket_close`` calls ``trio.lowlevel.notify_closing``
  first: trio requires it, and it wakes a task still waiting on that socket.

Opening the connection is the one blocking step: paho's ``reconnect()`` resolves the
host, connects TCP and completes the TLS handshake with blocking calls (bounded by
``connect_timeout``, except for the name lookup, which is bounded by the resolver's own
timeouts). paho has no way to hand it a socket opened elsewhere, and ``connect_async()``
only records the parameters, so ``reconnect()`` runs in a worker thread
(``trio.to_thread``) rather than stalling every other task. That thread touches the
client while nothing else does: no paho call is made from trio while connecting
(publish and subscribe check the connection first), and the callbacks paho makes in
that thread only assign plain attributes. Cancelling a connect waits for the thread to
finish, so that it never races the next use of the client.

What ``publish()`` promises: it returns only when the broker has the message: QoS 0
once the packet is written to the socket, QoS 1 on PUBACK, QoS 2 on PUBCOMP (waited for
up to ``ack_timeout``). Otherwise it raises, per ``vumi_like.transports.outcomes``:

* ``ProviderUnavailable``: not connected, or the connection was lost before the
  acknowledgement. The message may or may not have reached the broker; the caller's
  retry may deliver it twice (at least once, never "maybe zero" reported as sent).
* ``TemporaryFailure``: no acknowledgement within ``ack_timeout``, or a refusal that may
  pass (see ``reasons.py``).
* ``PermanentFailure``: a refusal that will not pass, a topic no broker takes
  (wildcards, empty, U+0000), or a packet bigger than the broker's MQTT 5 Maximum
  Packet Size (sending it would only get us disconnected, again on every retry).

paho keeps at most 20 QoS 1/2 publishes in flight (its default, and mosquitto's
Receive Maximum); more wait in paho's queue, within their ``ack_timeout``.

A QoS 1/2 publish still unacknowledged when the connection drops: with ``clean_start``
(the default) every connection starts a new session, so the broker has forgotten it;
paho would send it again on the next connection, on top of the caller's retry, so it
is dropped. With a persistent session MQTT requires the client to resend it with its
packet identifier (dropping it would leave the broker holding that identifier, and a
later message reusing it would be taken for a duplicate and lost), so paho keeps it
and resends it; the caller has been told ``ProviderUnavailable`` all the same.

paho reports "published" through ``on_publish(mid)``, for QoS 0 when written and for
QoS 1/2 when acknowledged, and packet identifiers wrap after 65535, so a QoS 0 write
can report the identifier of a QoS 1 publish still waiting. A publish therefore ends
only when its own ``MQTTMessageInfo`` says published, which paho sets for that message
alone; the callback just wakes the waiter.

Inbound: subscriptions are remembered and made again after every reconnect (before
``connected`` turns true), so retained messages arrive again then. Messages go to
``messages``, a trio memory channel, and the reader never blocks on it: a consumer
that publishes while handling a message must not stop the reader from seeing its
PUBACK. QoS 1/2 messages are bounded by the broker, which sends no more than its
in-flight window while they are unacknowledged; QoS 0 messages beyond
``inbound_qos0_backlog`` waiting are dropped (at most once is their contract). The
client uses paho's ``manual_ack``: a QoS 1 message is acknowledged (PUBACK) only when
the caller calls ``ack()`` after handling it; with a persistent session the broker
sends an unacknowledged one again after a reconnect (``duplicate`` set), so a message
is lost only if its session is. With ``clean_start`` the broker forgets unacknowledged
messages when the connection drops: use a persistent session (``clean_start: false``,
a fixed ``client_id``) where inbound must survive a drop. For QoS 2, paho sends PUBREC
on receipt, which already hands responsibility to us; ``ack()`` sends the PUBCOMP.
MQTT wants acknowledgements in the order messages arrived; ack in order where order
matters.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import paho.mqtt.client as paho
import structlog
import trio
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from vumi_like.transports.mqtt.reasons import publish_failure
from vumi_like.transports.mqtt.settings import MqttSettings
from vumi_like.transports.mqtt.topics import TopicError, check_topic_filter, publish_topic_bytes
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderUnavailable,
    TemporaryFailure,
)

__all__ = [
    "ConnectionState",
    "InboundMessage",
    "QoS",
    "SubscriptionError",
    "TrioMqttClient",
    "open_mqtt_client",
]

log = structlog.get_logger(__name__)

QoS = Literal[0, 1, 2]
_SUCCESS = MQTTErrorCode.MQTT_ERR_SUCCESS
_KEEP_ALIVE_TIMEOUT = 0x8D
_STOPPED = "client stopped"


@attrs.frozen
class ConnectionState:
    """Whether the client is connected and, if not, why (for health and logs)."""

    connected: bool
    reason: str


@attrs.frozen
class InboundMessage:
    """A message received on a subscription. Pass it to ``TrioMqttClient.ack``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    # Sent again: a redelivery of a message not acknowledged on an earlier connection.
    duplicate: bool
    # MQTT 5 properties by paho's names (``ContentType``, ``UserProperty``...); empty in 3.1.1.
    properties: Mapping[str, Any]
    packet_id: int
    connection: int  # which connection it came on: an ack is only valid there


class SubscriptionError(Exception):
    """The broker refused a subscription, or did not answer it in time."""


@attrs.define(eq=False)
class _Waiter:
    """A publish or subscribe waiting for the broker; the I/O tasks wake it."""

    info: paho.MQTTMessageInfo | None = None
    reason_codes: list[ReasonCode] | None = None
    lost: str | None = None
    _wakeup: trio.Event = attrs.field(factory=trio.Event)

    def wake(self) -> None:
        self._wakeup.set()

    def settled(self) -> bool:
        if self.lost is not None:
            return True
        if self.info is not None:
            return self.info.is_published()
        return self.reason_codes is not None

    async def wait(self) -> None:
        while not self.settled():
            await self._wakeup.wait()
            self._wakeup = trio.Event()


@attrs.define(eq=False)
class _Connection:
    """One connection's state, from opening the socket until it is closed."""

    number: int
    socket: Any = None  # paho's SocketLike: a socket, or an ssl.SSLSocket
    write_wanted: bool = False
    write_wakeup: trio.Event = attrs.field(factory=trio.Event)
    connack: trio.Event = attrs.field(factory=trio.Event)
    open: bool = False  # CONNACK accepted and not lost since
    connected: bool = False  # reported as connected (subscriptions restored)
    closing: bool = False  # we are disconnecting on purpose
    max_packet_size: int | None = None
    paho_error: str | None = None  # paho's last error log line: the detail of a loss
    lost: trio.Event = attrs.field(factory=trio.Event)
    lost_reason: str = ""


class TrioMqttClient:
    """An MQTT client that stays connected while ``run`` runs (see the module docstring).

    ``on_state_change`` is called (synchronously; it must not block) when the client
    connects, when the connection is lost, after each failed attempt, and when it stops.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        on_state_change: Callable[[ConnectionState], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_state_change = on_state_change
        self._mqtt5 = settings.protocol == "mqtt5"
        self._conn = _Connection(number=0)
        self._subscriptions: dict[str, int] = {}
        self._acks: dict[int, _Waiter] = {}  # QoS 1/2 publishes by packet identifier
        self._unwritten: set[_Waiter] = set()  # QoS 0 publishes
        self._subacks: dict[int, _Waiter] = {}  # subscribes by packet identifier
        self._paho = self._make_paho()
        self._arm()
        self._started = False
        self._connected = False
        self._state = ConnectionState(False, "not started")
        self._state_changed = trio.Event()
        self._dropping = False
        self._inbound, self.messages = trio.open_memory_channel[InboundMessage](math.inf)

    # -- public API

    @property
    def connected(self) -> bool:
        """True while the client can publish: CONNACK received, subscriptions restored."""
        return self._connected

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is)."""
        while not self._connected:
            await self._state_changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect after every loss, until cancelled.

        Started at once (the broker may be down; ``connected`` says when it is up). The
        wait before a reconnect doubles with each failed attempt, from
        ``reconnect_interval`` up to ``max_reconnect_interval``. When cancelled, the
        client disconnects cleanly (within ``close_timeout``) and closes ``messages``.
        A client runs once.
        """
        if self._started:
            raise RuntimeError("a TrioMqttClient runs once")
        self._started = True
        task_status.started()
        failures = 0
        try:
            while True:
                failures = 0 if await self._connection() else failures + 1
                exponent = min(max(failures - 1, 0), 30)
                await trio.sleep(
                    min(
                        self.settings.max_reconnect_interval,
                        self.settings.reconnect_interval * 2**exponent,
                    )
                )
        finally:
            self._inbound.close()

    async def publish(
        self, topic: str, payload: bytes, *, qos: QoS = 0, retain: bool = False
    ) -> None:
        """Publish ``payload`` on ``topic``; return once the broker has it.

        Raises ``ProviderUnavailable``, ``TemporaryFailure`` or ``PermanentFailure``
        (see the module docstring).
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        conn = self._conn
        if not self._connected:
            raise ProviderUnavailable(
                f"not connected to the MQTT broker at {self.settings.where()}: "
                f"{self._state.reason}"
            )
        try:
            encoded = publish_topic_bytes(topic)
        except TopicError as exc:
            raise PermanentFailure(f"cannot publish on {topic!r}: {exc}") from None
        size = _publish_packet_size(encoded, payload, qos, mqtt5=self._mqtt5)
        if conn.max_packet_size is not None and size > conn.max_packet_size:
            raise PermanentFailure(
                f"publish on {topic!r} is {size} bytes; the broker takes at most "
                f"{conn.max_packet_size}"
            )
        try:
            info = self._paho.publish(topic, payload, qos, retain)
        except ValueError as exc:  # paho's own checks: a payload over 256 MB
            raise PermanentFailure(f"cannot publish on {topic!r}: {exc}") from None
        if info.rc != _SUCCESS:
            raise TemporaryFailure(
                f"publish on {topic!r} not queued: {paho.error_string(info.rc)}"
            )
        waiter = _Waiter(info=info)
        if qos == 0:
            self._unwritten.add(waiter)
        else:
            self._acks[info.mid] = waiter
        try:
            with trio.move_on_after(self.settings.ack_timeout):
                await waiter.wait()
        finally:
            if qos == 0:
                self._unwritten.discard(waiter)
            elif self._acks.get(info.mid) is waiter:
                del self._acks[info.mid]
        if waiter.lost is not None:
            raise ProviderUnavailable(waiter.lost)
        if not waiter.settled():
            awaited = "written" if qos == 0 else "acknowledged"
            raise TemporaryFailure(
                f"publish on {topic!r} not {awaited} within {self.settings.ack_timeout:g} s"
            )
        if qos > 0 and waiter.reason_codes:
            failure = publish_failure(waiter.reason_codes[0], topic)
            if failure is not None:
                raise failure

    async def subscribe(self, topic_filter: str, qos: QoS = 1) -> None:
        """Subscribe to ``topic_filter`` now if connected, and after every reconnect.

        An invalid filter is a ``TopicError`` (a ``ValueError``) at once. Messages
        arrive on ``messages``. Connected, this waits for the broker's SUBACK
        and raises ``SubscriptionError`` if it refuses (the filter is then forgotten) or
        does not answer within ``ack_timeout``. Not connected, it returns at once: the
        subscription is made on connecting, and a refusal then is logged.
        """
        check_topic_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        self._subscriptions[topic_filter] = qos
        conn = self._conn
        if not conn.open:
            return
        waiter = await self._send_subscribe(conn, [(topic_filter, qos)])
        if waiter is None or waiter.lost is not None:
            return  # made again on the next connection
        if waiter.reason_codes is None:
            raise SubscriptionError(
                f"no SUBACK for {topic_filter!r} within {self.settings.ack_timeout:g} s"
            )
        refused = waiter.reason_codes[0]
        if refused.is_failure:
            self._subscriptions.pop(topic_filter, None)
            raise SubscriptionError(f"broker refused the subscription {topic_filter!r}: {refused}")

    def ack(self, message: InboundMessage) -> bool:
        """Acknowledge ``message`` to the broker, after handling it.

        False when the connection it came on is gone: the ack cannot be sent, and the
        broker will send the message again if the session persists. QoS 0 messages
        need no ack (True).
        """
        if message.qos == 0:
            return True
        conn = self._conn
        if message.connection != conn.number or conn.lost.is_set():
            return False
        self._paho.ack(message.packet_id, message.qos)
        return True

    # -- one connection

    async def _connection(self) -> bool:
        """Connect, serve the connection until it is lost; True if it got connected."""
        conn = self._conn = _Connection(number=self._conn.number + 1)
        try:
            try:
                await trio.to_thread.run_sync(self._paho.reconnect)
            except OSError as exc:  # DNS, TCP, TLS (ssl.SSLError is an OSError)
                self._lose(conn, str(exc) or type(exc).__name__)
                return False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, conn)
                nursery.start_soon(self._write, conn)
                nursery.start_soon(self._keep_alive, conn)
                await self._open_session(conn)
                if conn.open:
                    conn.connected = self._connected = True
                    log.info(
                        "mqtt connected", broker=self.settings.where(), connection=conn.number
                    )
                    self._report(ConnectionState(True, "connected"))
                await conn.lost.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._close(conn)
        return conn.connected

    async def _open_session(self, conn: _Connection) -> None:
        """Wait for CONNACK, then subscribe again; on failure, lose the connection."""
        with trio.move_on_after(self.settings.connect_timeout):
            await conn.connack.wait()
        if not conn.connack.is_set():
            self._lose(conn, f"no CONNACK within {self.settings.connect_timeout:g} s")
            return
        if not conn.open or not self._subscriptions:
            return
        filters = list(self._subscriptions.items())
        waiter = await self._send_subscribe(conn, filters)
        if waiter is None or waiter.lost is not None:
            return
        if waiter.reason_codes is None:
            self._lose(conn, f"no SUBACK within {self.settings.ack_timeout:g} s")
            return
        for (topic_filter, _), code in zip(filters, waiter.reason_codes, strict=False):
            if code.is_failure:
                log.error("mqtt subscription refused", topic_filter=topic_filter, reason=str(code))
                self._subscriptions.pop(topic_filter, None)

    async def _send_subscribe(
        self, conn: _Connection, filters: list[tuple[str, int]]
    ) -> _Waiter | None:
        """SUBSCRIBE and wait for SUBACK; None if it could not be sent (connection gone)."""
        rc, mid = self._paho.subscribe(filters)
        if rc != _SUCCESS or mid is None:
            return None
        waiter = self._subacks[mid] = _Waiter()
        try:
            with trio.move_on_after(self.settings.ack_timeout):
                await waiter.wait()
        finally:
            self._subacks.pop(mid, None)
        return waiter

    async def _close(self, conn: _Connection) -> None:
        """End ``conn``: say goodbye if we are stopping, close the socket, report."""
        stopping = not conn.lost.is_set()
        if stopping and conn.open:
            conn.closing = True
            with trio.move_on_after(self.settings.close_timeout):
                await self._disconnect(conn)
        self._lose(conn, _STOPPED)
        # connect_async() does no I/O: it closes the socket paho may still hold
        # ("any already established connection will be terminated immediately") and
        # records where to connect next time.
        self._arm()
        if self.settings.clean_start:
            self._paho.drop_out_messages()  # see the module docstring
        where = self.settings.where()
        if stopping:
            if conn.connected:
                log.info("mqtt disconnected", broker=where)
            self._report(ConnectionState(False, _STOPPED))
        elif conn.connected:
            log.warning("mqtt connection lost", broker=where, reason=conn.lost_reason)
            self._report(ConnectionState(False, f"connection lost: {conn.lost_reason}"))
        else:
            log.warning("mqtt connect failed", broker=where, reason=conn.lost_reason)
            self._report(ConnectionState(False, f"connect failed: {conn.lost_reason}"))

    async def _disconnect(self, conn: _Connection) -> None:
        """Send DISCONNECT; paho closes the socket once it is written."""
        self._paho.disconnect()
        while self._paho.socket() is not None:
            await trio.lowlevel.wait_writable(conn.socket)
            self._paho.loop_write()

    def _lose(self, conn: _Connection, reason: str) -> None:
        """``conn`` is lost (the first reason given is kept): fail what waits on it."""
        if conn.lost.is_set():
            return
        if conn.paho_error:
            reason = f"{reason} ({conn.paho_error})"
        conn.lost_reason = reason
        conn.open = False
        self._connected = False
        unavailable = f"connection to the MQTT broker at {self.settings.where()} lost: {reason}"
        for waiter in [*self._acks.values(), *self._unwritten, *self._subacks.values()]:
            waiter.lost = unavailable
            waiter.wake()
        conn.lost.set()
        conn.connack.set()

    def _report(self, state: ConnectionState) -> None:
        self._state = state
        self._state_changed.set()
        self._state_changed = trio.Event()
        if self._on_state_change is not None:
            self._on_state_change(state)

    # -- the I/O tasks of a connection

    async def _read(self, conn: _Connection) -> None:
        sock = conn.socket
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                self._lose(conn, "socket closed")
                return
            rc = self._paho.loop_read()
            # TLS: a record read whole may hold more than paho asked for; those bytes
            # wait in the SSL object, where the socket's readiness cannot show them.
            while rc == _SUCCESS and self._paho.socket() is sock and _buffered(sock):
                rc = self._paho.loop_read()
            if rc != _SUCCESS or self._paho.socket() is not sock:
                self._lose(conn, _describe(rc, conn))
                return

    async def _write(self, conn: _Connection) -> None:
        sock = conn.socket
        while True:
            while not conn.write_wanted:
                conn.write_wakeup = trio.Event()
                await conn.write_wakeup.wait()
            try:
                await trio.lowlevel.wait_writable(sock)
            except trio.ClosedResourceError:
                self._lose(conn, "socket closed")
                return
            rc = self._paho.loop_write()
            for waiter in list(self._unwritten):
                if waiter.settled():
                    waiter.wake()
            if rc != _SUCCESS or self._paho.socket() is not sock:
                self._lose(conn, _describe(rc, conn))
                return

    async def _keep_alive(self, conn: _Connection) -> None:
        while True:
            await trio.sleep(1)
            # Sends PINGREQ when idle; closes the socket (on_disconnect) when the broker
            # has not answered within keepalive.
            if self._paho.loop_misc() != _SUCCESS:
                self._lose(conn, "the broker did not answer within keepalive")
                return

    # -- paho

    def _make_paho(self) -> paho.Client:
        settings = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=None if self._mqtt5 else settings.clean_start,
            protocol=MQTTProtocolVersion.MQTTv5 if self._mqtt5 else MQTTProtocolVersion.MQTTv311,
            # paho would reconnect inside loop_read() (blocking) after some refusals;
            # reconnecting is ours to do.
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.connect_timeout = settings.connect_timeout
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        context = settings.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    def _arm(self) -> None:
        settings = self.settings
        properties: Properties | None = None
        if self._mqtt5 and not settings.clean_start:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = settings.session_expiry_interval
        self._paho.connect_async(
            settings.host,
            settings.port,
            settings.keepalive,
            clean_start=settings.clean_start if self._mqtt5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )

    # paho calls on_socket_open and on_socket_register_write from reconnect(), in the
    # connecting thread: there they assign attributes and touch nothing of trio's.

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._conn.socket = sock
        self._conn.write_wanted = False  # paho has just reset its own flag

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        trio.lowlevel.notify_closing(sock)

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._conn.write_wanted = True
        if trio.lowlevel.in_trio_run():
            self._conn.write_wakeup.set()

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._conn.write_wanted = False

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        conn = self._conn
        if reason_code.is_failure:
            self._lose(conn, f"broker refused the connection: {reason_code}")
            return
        conn.open = True
        conn.max_packet_size = getattr(properties, "MaximumPacketSize", None)
        conn.connack.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # The other ways a connection ends come back to the reader or writer as an
        # error code (or, to a task waiting on the socket, as its closing), with more
        # to say than the reason code paho makes up here ("Unspecified error").
        conn = self._conn
        if conn.closing:
            return
        if flags.is_disconnect_packet_from_server:
            self._lose(conn, f"broker disconnected: {reason_code}")
        elif reason_code.value == _KEEP_ALIVE_TIMEOUT:
            self._lose(conn, "the broker did not answer within keepalive")

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        waiter = self._acks.get(mid)
        # Not yet published: this callback is for it (paho marks it published after
        # calling us), or for a QoS 0 write that reuses its identifier, whose reason
        # code the real acknowledgement will overwrite.
        if waiter is not None and waiter.info is not None and not waiter.info.is_published():
            waiter.reason_codes = [reason_code]
            waiter.wake()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties,
    ) -> None:
        waiter = self._subacks.get(mid)
        if waiter is not None:
            waiter.reason_codes = reason_codes
            waiter.wake()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        conn = self._conn
        try:
            topic = message.topic
        except UnicodeDecodeError:
            log.warning("mqtt inbound dropped", reason="topic is not UTF-8", qos=message.qos)
            client.ack(message.mid, message.qos)  # or the broker sends it again and again
            return
        backlog = self._inbound.statistics().current_buffer_used
        if message.qos == 0 and backlog >= self.settings.inbound_qos0_backlog:
            if not self._dropping:
                log.warning("mqtt inbound dropped", reason="backlog full", backlog=backlog)
                self._dropping = True
            return
        self._dropping = False
        inbound = InboundMessage(
            topic=topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            duplicate=bool(message.dup),
            properties=message.properties.json() if message.properties is not None else {},
            packet_id=message.mid,
            connection=conn.number,
        )
        try:
            self._inbound.send_nowait(inbound)
        except trio.BrokenResourceError:
            pass  # the consumer closed ``messages``: nobody wants inbound any more

    def _on_log(self, client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._conn.paho_error = buf


@asynccontextmanager
async def open_mqtt_client(
    settings: MqttSettings,
    *,
    on_state_change: Callable[[ConnectionState], None] | None = None,
) -> AsyncIterator[TrioMqttClient]:
    """A running ``TrioMqttClient``, stopped (cleanly disconnected) on leaving the block."""
    client = TrioMqttClient(settings, on_state_change=on_state_change)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()


def _describe(rc: MQTTErrorCode, conn: _Connection) -> str:
    """Why paho's ``loop_read``/``loop_write`` ended the connection with ``rc``."""
    if rc == _SUCCESS:
        return "socket closed"
    if rc == MQTTErrorCode.MQTT_ERR_CONN_LOST and conn.paho_error is None:
        return "the broker closed the connection"  # EOF: paho says nothing more
    return paho.error_string(rc).rstrip(".")


def _buffered(sock: Any) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _publish_packet_size(topic: bytes, payload: bytes, qos: int, *, mqtt5: bool) -> int:
    """Bytes of the PUBLISH packet paho will write (MQTT 5: with no properties)."""
    remaining = 2 + len(topic) + len(payload) + (2 if qos else 0) + (1 if mqtt5 else 0)
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16384) + (remaining >= 2097152)
    return 1 + length_bytes + remaining
