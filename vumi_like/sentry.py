"""Error reporting to Sentry: set up once per process, fed by ``report_exception``."""

from __future__ import annotations

from typing import Any

from vumi_like.redaction import redact

__all__ = ["configure_error_reporting", "report_exception"]


def configure_error_reporting(dsn: str | None) -> bool:
    """Report errors to Sentry at ``dsn``; return whether reporting is on.

    What is reported is what ``report_exception`` is given (a failed handler, an
    unhandled error in an HTTP route), with its traceback; log lines become Sentry
    breadcrumbs, not events of their own. Events are redacted like log lines before
    they leave. A process has one Sentry client: under ``vumi-like run`` the first
    worker's ``sentry_dsn`` is used.
    """
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    def scrub(event: Any, hint: Any) -> Any:
        return redact(event)

    sentry_sdk.init(
        dsn=dsn,
        before_send=scrub,
        integrations=[LoggingIntegration(event_level=None)],
    )
    return True


def report_exception(exc: BaseException) -> None:
    """Send ``exc`` to Sentry if ``configure_error_reporting`` turned reporting on."""
    import sentry_sdk

    if sentry_sdk.is_initialized():
        sentry_sdk.capture_exception(exc)
