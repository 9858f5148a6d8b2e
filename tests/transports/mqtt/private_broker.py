"""A mosquitto of the tests' own, for what the shared one on 1883 is not set up to do.

It runs the installed ``mosquitto`` binary with a config in a temporary directory:

* a plain listener with an ACL (anonymous clients may use ``allowed/#`` only, so a
  publish elsewhere is refused with MQTT 5 reason code 0x87) and a Maximum Packet Size
  of ``MAX_PACKET_SIZE`` (sent to MQTT 5 clients in CONNACK);
* a TLS listener with a server certificate for 127.0.0.1 from a ``trustme`` CA, that
  requires a client certificate from the same CA.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import trustme

from tests.test_worker import free_port

MAX_PACKET_SIZE = 4096
ALLOWED_PREFIX = "allowed"


@attrs.frozen
class PrivateBroker:
    plain_port: int
    tls_port: int
    ca_file: Path  # the CA that signed the server's and the client's certificates
    client_cert_file: Path  # client certificate and its key, one PEM
    other_ca_file: Path  # a CA that signed nothing here


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None,
    )


@contextmanager
def private_broker(binary: str, directory: Path) -> Iterator[PrivateBroker]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(directory / "ca.pem")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(directory / "server.pem")
    server.private_key_pem.write_to_path(directory / "server.key")
    client = ca.issue_cert("vumi-like-test-client")
    client.private_key_and_cert_chain_pem.write_to_path(directory / "client.pem")
    trustme.CA().cert_pem.write_to_path(directory / "other-ca.pem")
    (directory / "acl").write_text(f"topic readwrite {ALLOWED_PREFIX}/#\n")

    broker = PrivateBroker(
        plain_port=free_port(),
        tls_port=free_port(),
        ca_file=directory / "ca.pem",
        client_cert_file=directory / "client.pem",
        other_ca_file=directory / "other-ca.pem",
    )
    (directory / "mosquitto.conf").write_text(
        f"""\
persistence false
user {getpass.getuser()}
allow_anonymous true
acl_file {directory / "acl"}
max_packet_size {MAX_PACKET_SIZE}
log_dest stderr
listener {broker.plain_port} 127.0.0.1
listener {broker.tls_port} 127.0.0.1
cafile {directory / "ca.pem"}
certfile {directory / "server.pem"}
keyfile {directory / "server.key"}
require_certificate true
"""
    )
    log_path = directory / "mosquitto.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "-c", str(directory / "mosquitto.conf")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(process, [broker.plain_port, broker.tls_port], log_path)
        yield broker
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(process: subprocess.Popen[bytes], ports: list[int], log_path: Path) -> None:
    """Return once mosquitto accepts connections on every port (it has no readiness signal)."""
    deadline = time.monotonic() + 10
    for port in ports:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto not listening: {log_path.read_text()}"
                    ) from None
                time.sleep(0.02)
