"""``amqps://`` brokers: the certificate and its host name are checked.

RabbitMQ here speaks plain AMQP only, and its configuration is not ours to
change; a TLS-terminating proxy started by the test stands in for a broker
like CloudAMQP, with a throwaway CA and a certificate for ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import RABBITMQ_HOST, RABBITMQ_PORT, SESSION_VHOST
from tests.helpers import Broker, child_env, run_cli

#: Bounds every wait of the proxy: start, handshake, upstream connect, stop.
PROXY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(folder: Path, host: str) -> Certificates:
    """A throwaway CA and a server certificate it signed for ``host`` only."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("notifications test CA"))
        .issuer_name(_name("notifications test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    found = Certificates(
        ca_file=folder / "ca.pem",
        cert_file=folder / "server.pem",
        key_file=folder / "server.key",
    )
    found.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    found.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return found


class TlsProxy:
    """Accepts TLS on 127.0.0.1 and forwards the plain bytes to RabbitMQ.

    It runs an asyncio loop in a thread of its own: one loop does every TLS
    read and write, which an ``ssl.SSLSocket`` shared by two threads would
    not allow safely.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(PROXY_TIMEOUT_S):
            raise AssertionError("the TLS proxy did not start in time")
        if self._error is not None:
            raise AssertionError(f"the TLS proxy did not start: {self._error}")

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(PROXY_TIMEOUT_S)
        if self._thread.is_alive():
            raise AssertionError("the TLS proxy did not stop in time")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def on_connect(
            client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
        ) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._forward(client_reader, client_writer)
            finally:
                connections.discard(task)

        server = await asyncio.start_server(
            on_connect,
            "127.0.0.1",
            0,
            ssl=self.context,
            ssl_handshake_timeout=PROXY_TIMEOUT_S,
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()

        await self._stopping.wait()
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(RABBITMQ_HOST, RABBITMQ_PORT), PROXY_TIMEOUT_S
            )
            await asyncio.gather(
                _pipe(client_reader, upstream_writer),
                _pipe(upstream_reader, client_writer),
            )
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        # One side hung up: so does the other, as a direct connection would.
        writer.close()


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    folder = tmp_path / "tls"
    folder.mkdir()
    return make_certificates(folder, "localhost")


@pytest.fixture
def tls_port(rabbitmq: Broker, certificates: Certificates) -> Iterator[int]:
    """Port of a TLS proxy to the session vhost's RabbitMQ, for ``localhost``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    proxy = TlsProxy(context)
    try:
        proxy.start()
        yield proxy.port
    finally:
        proxy.stop()


def amqps_url(host: str, port: int) -> str:
    return f"amqps://guest:guest@{host}:{port}/{SESSION_VHOST}"


def send_over_tls(
    url: str, data_dir: Path, cwd: Path, **extra: str
) -> tuple[int, list[str]]:
    env = child_env(data_dir, url, NOTIFICATIONS_PUBLISH_TIMEOUT_S="3", **extra)
    # The subprocess timeout is the bound: a hang fails the test.
    result = run_cli("send", "hr", "over TLS", env=env, cwd=cwd, timeout_s=60)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr.strip().splitlines()


@pytest.mark.rabbitmq
def test_a_broker_certificate_signed_by_the_configured_ca_is_trusted(
    rabbitmq: Broker, tls_port, certificates, data_dir, tmp_path
):
    code, errors = send_over_tls(
        amqps_url("localhost", tls_port),
        data_dir,
        tmp_path,
        NOTIFICATIONS_CA_FILE=str(certificates.ca_file),
    )

    assert (code, errors) == (0, [])
    assert rabbitmq.count("hr_queue") == 1


@pytest.mark.rabbitmq
def test_a_file_sent_over_tls_reaches_the_queue_whole(
    rabbitmq: Broker, tls_port, certificates, data_dir, tmp_path
):
    # send_many reads the broker's confirms between writes, without blocking:
    # over TLS too.
    (tmp_path / "texts.txt").write_text("".join(f"Over TLS {n}\n" for n in range(3000)))
    env = child_env(
        data_dir,
        amqps_url("localhost", tls_port),
        NOTIFICATIONS_PUBLISH_TIMEOUT_S="3",
        NOTIFICATIONS_CA_FILE=str(certificates.ca_file),
    )

    result = run_cli("send", "hr", "--file", "texts.txt", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert len(set(result.stdout.splitlines())) == 3000
    assert rabbitmq.count("hr_queue") == 3000


@pytest.mark.rabbitmq
def test_a_certificate_the_system_does_not_trust_stops_the_send_in_one_line(
    rabbitmq: Broker, tls_port, data_dir, tmp_path
):
    code, errors = send_over_tls(amqps_url("localhost", tls_port), data_dir, tmp_path)

    assert code != 0
    assert len(errors) == 1
    assert errors[0].startswith(
        f"Error: Cannot reach the broker at amqps://guest:**@localhost:{tls_port}/"
    )
    assert "certificate verify failed" in errors[0]
    assert "NOTIFICATIONS_CA_FILE" in errors[0]
    assert "guest:guest" not in errors[0]
    assert rabbitmq.count("hr_queue") in (None, 0)


@pytest.mark.rabbitmq
def test_a_certificate_for_another_host_name_is_refused(
    rabbitmq: Broker, tls_port, certificates, data_dir, tmp_path
):
    # The certificate names localhost only; 127.0.0.1 is the same machine
    # but not the name it was issued for.
    code, errors = send_over_tls(
        amqps_url("127.0.0.1", tls_port),
        data_dir,
        tmp_path,
        NOTIFICATIONS_CA_FILE=str(certificates.ca_file),
    )

    assert code != 0
    assert len(errors) == 1
    assert "certificate verify failed" in errors[0]
    assert "mismatch" in errors[0]
    assert rabbitmq.count("hr_queue") in (None, 0)


def test_a_ca_file_that_does_not_exist_is_a_configuration_error(data_dir, tmp_path):
    missing = tmp_path / "no-such-ca.pem"

    code, errors = send_over_tls(
        amqps_url("localhost", 5671),
        data_dir,
        tmp_path,
        NOTIFICATIONS_CA_FILE=str(missing),
    )

    assert code != 0
    assert errors == [
        f"Error: NOTIFICATIONS_CA_FILE={str(missing)!r} is not a file: give the path "
        "of the PEM file holding the broker's CA certificate."
    ]
