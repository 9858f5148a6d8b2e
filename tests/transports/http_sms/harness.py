"""Configs, messages and event helpers shared by the ``HttpSmsTransport`` tests."""

from __future__ import annotations

from typing import Any

from tests.broker.test_contract import receive
from tests.test_worker import free_port
from tests.transports.http_sms.fakes import ACCOUNT_SID, AUTH_TOKEN
from vumi_like.broker import Broker
from vumi_like.messages import Message
from vumi_like.transports.http_sms import HttpSmsTransportConfig

KANNEL_SECRET = "kannel-callback-secret"

# Fast retries, so a test sees the retry of a temporary failure at once.
FAST_RETRIES: dict[str, Any] = {"retry_delay_base": 0.05, "retry_jitter": 0, "max_retries": 5}


def own_http(**fields: Any) -> dict[str, Any]:
    """``http_bind`` on a free port and ``callback_base_url`` pointing at it."""
    port = free_port()
    return {
        "http_bind": f"127.0.0.1:{port}",
        "callback_base_url": f"http://127.0.0.1:{port}",
        **fields,
    }


def kannel_config(unique: str, kannel_url: str, **fields: Any) -> HttpSmsTransportConfig:
    return HttpSmsTransportConfig.model_validate(
        {
            "transport_name": unique,
            "preset": "kannel",
            "url": f"{kannel_url}/cgi-bin/sendsms",
            "username": "kannel-user",
            "password": "kannel-password",
            "callback_secret": KANNEL_SECRET,
            **own_http(),
            **FAST_RETRIES,
            **fields,
        }
    )


def twilio_config(unique: str, twilio_url: str, **fields: Any) -> HttpSmsTransportConfig:
    path = "/2010-04-01/Accounts/{account_sid}/Messages.json"
    return HttpSmsTransportConfig.model_validate(
        {
            "transport_name": unique,
            "preset": "twilio",
            "url": f"{twilio_url}{path}",
            "account_sid": ACCOUNT_SID,
            "password": AUTH_TOKEN,
            **own_http(),
            **FAST_RETRIES,
            **fields,
        }
    )


def outbound(unique: str, content: str = "hello") -> Message:
    return Message(
        to_addr="+27820000001",
        from_addr="+15005550006",
        transport_name=unique,
        transport_type="sms",
        content=content,
    )


async def inbound(broker: Broker, unique: str) -> Message:
    [delivery] = await receive(broker, f"{unique}.inbound", 1)
    return Message.from_json(delivery.body)
