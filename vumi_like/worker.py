"""``BaseWorker``: the life cycle every application, router and transport shares.

A worker is set up, consumes, optionally serves HTTP, and stops gracefully:

1. ``setup()`` (overridden by each worker) creates its connectors with
   ``setup_receive_inbound_connector`` / ``setup_receive_outbound_connector`` and any
   clients or caches it needs; connectors start consuming at once. The middlewares
   in ``config.middlewares`` are built with the worker (a bad class path or option
   stops start-up), set up before its first connector is created, and given to every
   connector, which applies those enabled for it (see ``vumi_like.middlewares``).
2. When ``http_bind`` is set, an HTTP server (quart-trio on hypercorn's trio worker)
   serves ``GET /health`` and ``GET /metrics`` plus whatever routes the worker added
   to ``self.http`` during ``setup()``. A route that meets a store or cache it cannot
   reach (``ServiceUnavailable``) is answered 503 with ``Retry-After``, and logged as
   a warning: a provider's callback is then sent again.
3. ``stop()`` (SIGTERM/SIGINT under the CLI, or the caller of ``run_worker``) closes
   every connector: new deliveries stop, in-flight handlers get ``shutdown_timeout``
   seconds, and what was not acked goes back to its queue. Then ``teardown()``
   releases what ``setup()`` took, the middlewares are torn down, and the HTTP
   server shuts down.

Workers import what they need from here (and from ``messages``, ``config``, ``retry``,
``caches``): the connector types, and ``PublishFailed`` for a publish the broker
refused. They never reach into ``broker`` or ``connectors``.

Workers never own the broker: ``run_worker`` opens one from the config, or takes the
one it is given (``vumi-like run`` shares one broker among several workers).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from vumi_like.broker import Broker, open_broker
from vumi_like.config import BaseConfig
from vumi_like.connectors import (
    BaseConnector,
    Handler,
    JobConnector,
    PublishFailed,
    ReceiveInboundConnector,
    ReceiveOutboundConnector,
)
from vumi_like.errors import ProblemError, problem_response
from vumi_like.metrics import REGISTRY
from vumi_like.middlewares import BaseMiddleware, filters_for, load_middlewares
from vumi_like.retry import ServiceUnavailable
from vumi_like.sentry import report_exception

__all__ = [
    "BaseWorker",
    "DuplicateConnectorError",
    "Handler",
    "JobConnector",
    "PublishFailed",
    "ReceiveInboundConnector",
    "ReceiveOutboundConnector",
    "run_worker",
    "serve_http",
]

log = structlog.get_logger(__name__)


class DuplicateConnectorError(Exception):
    """A worker tried to set up two connectors with the same name and direction."""


class BaseWorker:
    """Subclass, set ``config_class``, and create connectors in ``setup()``."""

    config_class: ClassVar[type[BaseConfig]] = BaseConfig

    def __init__(
        self,
        *,
        nursery: trio.Nursery,
        broker: Broker,
        config: BaseConfig,
        name: str | None = None,
    ) -> None:
        self.nursery = nursery
        self.broker = broker
        self.config = config
        self.name = name or type(self).__name__
        self.log = log.bind(worker=self.name)
        self.middlewares = load_middlewares(config.middlewares)  # ConfigError if unusable
        self._middlewares_set_up: list[BaseMiddleware] = []
        self._middleware_setup_lock = trio.Lock()
        self.receive_inbound_connectors: dict[str, ReceiveInboundConnector] = {}
        self.receive_outbound_connectors: dict[str, ReceiveOutboundConnector] = {}
        self.job_connectors: dict[str, JobConnector] = {}
        self.http: QuartTrio | None = None
        self.http_addresses: list[str] = []  # where the HTTP server listens, once it does
        self._consuming = False
        if config.http_bind:
            self.http = QuartTrio(self.name)
            self.http.add_url_rule("/health", "health", self._health_route, methods=["GET"])
            self.http.add_url_rule("/metrics", "metrics", self._metrics_route, methods=["GET"])
            self.http.register_error_handler(ProblemError, self._problem_error)
            self.http.register_error_handler(HTTPException, self._http_error)
            self.http.register_error_handler(ServiceUnavailable, self._service_unavailable)
            self.http.after_request(_read_whole_body)
            self.http.register_error_handler(Exception, self._unexpected_error)

    # -- what subclasses override

    async def setup(self) -> None:
        """Create connectors, clients and routes. Called once, before serving."""

    async def teardown(self) -> None:
        """Release what ``setup`` took. Called once, after every connector is closed."""

    def health_components(self) -> dict[str, dict[str, Any]]:
        """Each component's state, ``{"name": {"ok": bool, ...}}``; extend to add yours."""
        return {
            "amqp": {
                "ok": self.broker.connected,
                "state": "open" if self.broker.connected else "closed",
            }
        }

    # -- connectors

    async def setup_receive_inbound_connector(
        self,
        connector_name: str,
        inbound_handler: Handler | None,
        event_handler: Handler | None,
    ) -> ReceiveInboundConnector:
        """Consume ``<name>.inbound`` and ``<name>.event`` with the handlers and publish
        ``<name>.outbound``; with no handlers, only publish."""
        if connector_name in self.receive_inbound_connectors:
            raise DuplicateConnectorError(
                f"duplicate receive-inbound connector {connector_name!r}"
            )
        await self._set_up_middlewares()
        connector = ReceiveInboundConnector(
            self.broker, connector_name, **self._connector_options(connector_name)
        )
        self.receive_inbound_connectors[connector_name] = connector
        await connector.setup(
            self.nursery,
            inbound_handler=inbound_handler,
            event_handler=event_handler,
            start=self._consuming,
        )
        return connector

    async def setup_receive_outbound_connector(
        self, connector_name: str, outbound_handler: Handler
    ) -> ReceiveOutboundConnector:
        if connector_name in self.receive_outbound_connectors:
            raise DuplicateConnectorError(
                f"duplicate receive-outbound connector {connector_name!r}"
            )
        await self._set_up_middlewares()
        connector = ReceiveOutboundConnector(
            self.broker, connector_name, **self._connector_options(connector_name)
        )
        self.receive_outbound_connectors[connector_name] = connector
        await connector.setup(
            self.nursery, outbound_handler=outbound_handler, start=self._consuming
        )
        return connector

    async def setup_job_connector(
        self, queue: str, job_model: type[BaseModel], handler: Handler | None = None
    ) -> JobConnector:
        """A work queue of ``job_model`` jobs; consumed by ``handler`` if given, else
        publish-only (another worker consumes it)."""
        if queue in self.job_connectors:
            raise DuplicateConnectorError(f"duplicate job connector {queue!r}")
        options = self._connector_options(queue)
        del options["filters"]  # jobs pass through no middlewares
        connector = JobConnector(self.broker, queue, job_model, **options)
        self.job_connectors[queue] = connector
        await connector.setup(self.nursery, handler=handler, start=self._consuming)
        return connector

    def _connector_options(self, connector_name: str) -> dict[str, Any]:
        return {
            "worker_name": self.name,
            "concurrency": self.config.worker_concurrency,
            "shutdown_timeout": self.config.shutdown_timeout,
            "filters": filters_for(self.middlewares, connector_name),
        }

    async def _set_up_middlewares(self) -> None:
        # Here rather than in run_worker, so that however a worker is driven, no
        # connector exists before its middlewares are set up. The lock makes
        # connectors created concurrently wait for the one doing it.
        async with self._middleware_setup_lock:
            for middleware in self.middlewares[len(self._middlewares_set_up) :]:
                await middleware.setup()
                self._middlewares_set_up.append(middleware)

    async def _tear_down_middlewares(self) -> None:
        # In reverse order; one that fails does not keep the others from releasing theirs.
        while self._middlewares_set_up:
            middleware = self._middlewares_set_up.pop()
            try:
                await middleware.teardown()
            except Exception:
                self.log.exception("middleware teardown failed", middleware=repr(middleware))

    @property
    def connectors(self) -> list[BaseConnector]:
        return [
            *self.receive_inbound_connectors.values(),
            *self.receive_outbound_connectors.values(),
            *self.job_connectors.values(),
        ]

    # -- life cycle

    async def start_consuming(self) -> None:
        """Start every connector ``setup()`` created.

        Connectors wait for this so that no handler runs before ``setup()`` has
        finished: a router's first outbound must not arrive before the transport
        connector it is routed to exists. Connectors created later start at once.
        """
        self._consuming = True
        for connector in self.connectors:
            await connector.start()

    async def stop(self) -> None:
        """Close all connectors at once (each waits for its in-flight handlers); tear down."""
        async with trio.open_nursery() as nursery:
            for connector in self.connectors:
                nursery.start_soon(connector.close)
        try:
            await self.teardown()
        finally:
            await self._tear_down_middlewares()

    def health(self) -> tuple[dict[str, Any], int]:
        components = self.health_components()
        ok = all(component.get("ok", False) for component in components.values())
        return {"health": "ok" if ok else "down", "components": components}, 200 if ok else 500

    async def _health_route(self) -> tuple[dict[str, Any], int]:
        return self.health()

    async def _problem_error(self, error: ProblemError) -> Response:
        return problem_response(
            error.status,
            error.detail,
            code=error.code,
            retry_after=error.retry_after,
            headers=error.headers,
            **error.extra,
        )

    async def _http_error(self, error: HTTPException) -> Response:
        status = error.code or 500
        return problem_response(status, error.description or error.name)

    async def _service_unavailable(self, error: ServiceUnavailable) -> Response:
        # The caller may try again; the log says which service, the answer does not.
        self.log.warning(
            "service unavailable: answered 503",
            path=request.path,
            error=f"{type(error).__name__}: {error}",
        )
        return problem_response(
            503,
            "a service this worker depends on cannot be reached; try again",
            code="service_unavailable",
        )

    async def _unexpected_error(self, error: Exception) -> Response:
        self.log.exception("unhandled error in HTTP route", error=repr(error))
        report_exception(error)
        return problem_response(500, "internal error; see the worker's log", code="internal_error")

    async def _metrics_route(self) -> tuple[bytes, int, dict[str, str]]:
        return generate_latest(REGISTRY), 200, {"Content-Type": CONTENT_TYPE_LATEST}


async def _read_whole_body(response: Response) -> Response:
    """Let the request's body arrive in full before its response goes out.

    Some answers are given without any route reading the body: routing refuses the
    request (404, 405), the framework answers ``OPTIONS``, a form that does not parse is
    given up on. When the client sends the body a moment after the headers, as many
    do, the body then arrives after the answer, and the connection can no longer carry
    the next request: a keep-alive client waits on it until its timeout. Awaiting the
    body here, where every response passes, closes all those paths at once. A 413's
    body is refused unread instead, and its answer closes the connection.
    """
    if response.status_code != 413:
        with contextlib.suppress(Exception):
            await request.body
    return response


async def serve_http(
    app: QuartTrio,
    bind: str,
    stopped: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``bind`` until ``stopped`` is set; report the bound addresses."""
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 5
    await serve(app, config, shutdown_trigger=stopped.wait, task_status=task_status)


async def run_worker(
    worker_cls: type[BaseWorker],
    config: BaseConfig,
    *,
    broker: Broker | None = None,
    name: str | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[BaseWorker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one worker until ``stop`` is set (or this task is cancelled), then stop it.

    Started with ``nursery.start``, it reports the running worker once it is set up
    and serving.
    """
    stop = stop if stop is not None else trio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if broker is None:
            broker = await stack.enter_async_context(_open_config_broker(config))
        http_stopped = trio.Event()
        # Two nurseries: the HTTP server outlives the worker's own tasks, so /health
        # answers while connectors drain, and hypercorn then shuts down gracefully.
        async with trio.open_nursery() as http_nursery:
            async with trio.open_nursery() as nursery:
                worker = worker_cls(nursery=nursery, broker=broker, config=config, name=name)
                try:
                    await worker.setup()
                    await worker.start_consuming()
                    if worker.http is not None and config.http_bind:
                        worker.http_addresses = await http_nursery.start(
                            serve_http, worker.http, config.http_bind, http_stopped
                        )
                    worker.log.info("worker started", http_bind=config.http_bind)
                    task_status.started(worker)
                    await stop.wait()
                    worker.log.info("worker stopping")
                finally:
                    # Shielded so a cancelled run still stops cleanly; bounded because
                    # each connector is, plus a margin for teardown.
                    deadline = trio.current_time() + config.shutdown_timeout + 5
                    with trio.CancelScope(shield=True, deadline=deadline):
                        await worker.stop()
                    # Whatever else the worker started in its nursery ends with it.
                    nursery.cancel_scope.cancel()
            http_stopped.set()
        worker.log.info("worker stopped")


@contextlib.asynccontextmanager
async def _open_config_broker(config: BaseConfig) -> AsyncIterator[Broker]:
    async with open_broker(config.broker_url(), **config.broker_options()) as broker:
        yield broker
