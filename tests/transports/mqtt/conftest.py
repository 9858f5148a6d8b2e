"""Fixtures of the MQTT client tests: the shared Mosquitto, a private one, quick settings.

The shared Mosquitto is found at ``VUMI_LIKE_TEST_MQTT_URL`` (default
``mqtt://127.0.0.1:1883``, anonymous). The private one (TLS, ACL; see
``private_broker.py``) needs the ``mosquitto`` binary. Either missing skips the tests
that need it, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.conftest import IN_CI
from tests.transports.mqtt.private_broker import PrivateBroker, mosquitto_binary, private_broker
from vumi_like.transports.mqtt import ConnectionState, MqttSettings

MQTT_URL = os.environ.get("VUMI_LIKE_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


@pytest.fixture
def mosquitto_clients() -> None:
    """mosquitto_pub and mosquitto_sub are installed: a second, independent MQTT client."""
    missing = [name for name in ("mosquitto_pub", "mosquitto_sub") if not shutil.which(name)]
    if missing:
        if IN_CI:
            pytest.fail(f"{', '.join(missing)} required in CI")
        pytest.skip(f"{', '.join(missing)} not installed")


@pytest.fixture(scope="session")
def private_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    binary = mosquitto_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("the mosquitto binary is required in CI")
        pytest.skip("the mosquitto binary is not installed")
    with private_broker(binary, tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(params=["mqtt5", "mqtt311"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topic() -> str:
    """A topic prefix of this test's own."""
    return f"vumi-like-test/{uuid.uuid4().hex[:10]}"


def quick_settings(port: int, **fields: Any) -> MqttSettings:
    """Settings with the short timeouts and reconnect waits a test wants."""
    defaults: dict[str, Any] = {
        "host": "127.0.0.1",
        "connect_timeout": 2,
        "ack_timeout": 2,
        "close_timeout": 1,
        "reconnect_interval": 0.02,
        "max_reconnect_interval": 0.1,
    }
    return MqttSettings(port=port, **(defaults | fields))


class StateWatcher:
    """An ``on_state_change`` callback that a test can wait on."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[ConnectionState](100)
        self.seen: list[ConnectionState] = []

    def __call__(self, state: ConnectionState) -> None:
        self.seen.append(state)
        self._send.send_nowait(state)

    async def until(self, *, connected: bool) -> ConnectionState:
        """The next state reported with ``connected`` (earlier ones are passed over)."""
        while True:
            state = await self._receive.receive()
            if state.connected == connected:
                return state
