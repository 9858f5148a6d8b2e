"""``Rebinder``: keep an ESME bound to its SMSC, binding again whenever the session ends.

A transport wants one thing from the SMPP layer: a bound session when there can be
one, and to know when there is none, so that it stops taking outbound and reports
itself down. ``Rebinder.run`` binds, waits for the session to end (the SMSC unbound,
the connection broke, enquire_link went unanswered), and binds again, forever, until
it is cancelled, when it unbinds.

Between attempts it waits ``backoff_base * 2**n`` seconds, at most ``backoff_max``,
where n counts the attempts since the last successful bind: an SMSC that is down or
refuses the bind (a wrong password, too many binds for the account) is not hammered,
and one that dropped a working session is bound to again quickly. Every failure logs
one line with its reason; ``last_error`` keeps it for a health report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import structlog
import trio

from vumi_like.transports.outcomes import ProviderUnavailable
from vumi_like.transports.smpp.esme import (
    BadCredentials,
    BindFailed,
    DeliverHandler,
    EsmeSession,
    EsmeSettings,
    open_session,
)
from vumi_like.transports.smpp.pdus import SubmitSm, SubmitSmResp
from vumi_like.transports.smpp.sequence import RandomStartSequence, SequenceAllocator

__all__ = ["Rebinder"]

log = structlog.get_logger(__name__)


class Rebinder:
    """A session that binds again after it ends; ``run`` it in a nursery.

    ``on_state_change`` is called with True when a session is bound and False when it
    has ended, synchronously, so that a transport can pause its consumer at once.
    """

    def __init__(
        self,
        settings: EsmeSettings,
        on_deliver: DeliverHandler,
        *,
        sequence: SequenceAllocator | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        on_state_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_deliver = on_deliver
        self._sequence = sequence or RandomStartSequence()
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._on_state_change = on_state_change
        self._changed = trio.Event()
        self.session: EsmeSession | None = None
        self.last_error: str | None = None

    @property
    def bound(self) -> bool:
        return self.session is not None

    async def submit_sm(self, submit: SubmitSm) -> SubmitSmResp:
        """``EsmeSession.submit_sm`` on the current session; ``ProviderUnavailable``
        (``SessionClosed`` included) when there is none."""
        session = self.session
        if session is None:
            raise ProviderUnavailable(f"not bound to the SMSC: {self.last_error or 'binding'}")
        return await session.submit_sm(submit)

    async def wait_bound(self) -> EsmeSession:
        """The current session, once there is one."""
        while self.session is None:
            await self._changed.wait()
        return self.session

    async def wait_unbound(self) -> None:
        """Return once no session is bound."""
        while self.session is not None:
            await self._changed.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Bind, and bind again after every end, until cancelled. Reports started at
        once: the caller must not wait for an SMSC that may be down for hours."""
        task_status.started()
        failures = 0
        while True:
            try:
                async with open_session(
                    self.settings, self._on_deliver, sequence=self._sequence
                ) as session:
                    failures = 0
                    self._set_session(session)
                    try:
                        self.last_error = await session.wait_closed()
                    finally:
                        self._set_session(None)
            except BadCredentials as exc:
                self.last_error = str(exc)
                log.error("smpp bind refused: check system_id and password", reason=str(exc))
            except BindFailed as exc:
                self.last_error = str(exc)
                log.warning("smpp bind failed", reason=str(exc))
            delay = min(self._backoff_max, self._backoff_base * 2 ** min(failures, 32))
            failures += 1
            log.info("smpp binding again", delay=delay)
            await trio.sleep(delay)

    def _set_session(self, session: EsmeSession | None) -> None:
        self.session = session
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        if self._on_state_change is not None:
            self._on_state_change(session is not None)
