"""A TCP proxy between a client and the real broker (MQTT, AMQP), to cut or starve a
connection.

``cut()`` closes every connection through it (the client sees the broker go away);
``refusing`` closes new connections at once (the broker is "down"); ``swallowing``
drops what the broker sends (the broker has the client's packets, the client never
hears back: no PUBACK, no PINGRESP); ``dropping`` drops what the client sends (its
publishes never reach the broker, and it waits for answers that cannot come).
"""

from __future__ import annotations

import trio


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.swallowing = False
        self.dropping = False
        self._scopes: set[trio.CancelScope] = set()

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.refusing:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    async with upstream, trio.open_nursery() as pumps:
                        pumps.start_soon(self._pump, client, upstream, False, pumps.cancel_scope)
                        pumps.start_soon(self._pump, upstream, client, True, pumps.cancel_scope)
                finally:
                    self._scopes.discard(scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        from_broker: bool,
        both: trio.CancelScope,
    ) -> None:
        try:
            async for chunk in source:
                if self.swallowing if from_broker else self.dropping:
                    continue
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()  # one side closed: close the other
