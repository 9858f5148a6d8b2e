"""``MqttSettings``: combinations refused with one clear line, and the TLS context built."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from vumi_like.config import ConfigError
from vumi_like.transports.mqtt import MqttSettings


def test_defaults_are_the_backends() -> None:
    settings = MqttSettings()
    assert (settings.host, settings.port, settings.secure) == ("127.0.0.1", 1883, False)
    assert settings.ssl_context() is None


def test_a_kept_session_needs_a_client_id() -> None:
    with pytest.raises(ValidationError, match="clean_start false needs a client_id"):
        MqttSettings(clean_start=False)
    assert MqttSettings(clean_start=False, client_id="gateway-1").client_id == "gateway-1"


def test_tls_files_without_secure_are_refused() -> None:
    with pytest.raises(ValidationError, match="ca_cert_file, cert_file set but secure is false"):
        MqttSettings(ca_cert_file="ca.pem", cert_file="client.pem")


def test_a_key_file_needs_a_cert_file() -> None:
    with pytest.raises(ValidationError, match="key_file set without cert_file"):
        MqttSettings(secure=True, key_file="client.key")


def test_a_password_needs_a_username_and_stays_out_of_repr() -> None:
    with pytest.raises(ValidationError, match="password set without username"):
        MqttSettings(password="s3cret")
    settings = MqttSettings(username="gw", password="s3cret")
    assert "s3cret" not in repr(settings)


def test_the_protocol_is_mqtt5_or_mqtt311() -> None:
    with pytest.raises(ValidationError, match="protocol"):
        MqttSettings(protocol="mqtt31")  # type: ignore[arg-type]


def test_tls_context_verifies_the_broker_and_carries_the_client_certificate(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    client = ca.issue_cert("client")
    client.cert_chain_pems[0].write_to_path(tmp_path / "client.pem")
    client.private_key_pem.write_to_path(tmp_path / "client.key")
    settings = MqttSettings(
        secure=True,
        ca_cert_file=str(tmp_path / "ca.pem"),
        cert_file=str(tmp_path / "client.pem"),
        key_file=str(tmp_path / "client.key"),
    )
    context = settings.ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # that CA alone, not the system's


def test_a_missing_tls_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"nope\.pem"):
        MqttSettings(secure=True, ca_cert_file=str(missing)).ssl_context()
