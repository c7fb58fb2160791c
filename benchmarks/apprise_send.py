"""CPU of one Apprise send from a worker, connecting afresh and kept alive.

    python benchmarks/apprise_send.py [--count N] [--smoke]

A worker delivers each notification with one Apprise send per subscriber.
This measures what one ``json://`` (HTTP) and one ``jsons://`` (HTTPS)
send costs the sending process, first as Apprise does it on its own (a
new connection, and a new TLS context and handshake, per send), then
through :mod:`notifications.keepalive` as workers do, and prints the
ratio of the two from the same run. The endpoint runs in a child process,
so its work is not counted.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this folder (not the repository) is on sys.path.
sys.path.insert(0, str(REPO))

HOST = "127.0.0.1"


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1; (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def serve(cert: str | None, key: str | None) -> None:
    """The endpoint: answers every POST at once; prints its port."""
    import ssl

    from benchmarks.run import SlowEndpoint

    server = SlowEndpoint(0.0)
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_port, flush=True)
    server.serve_forever()


def cpu_per_send_us(url: str, count: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per Apprise send to ``url``, after one to warm up."""
    import apprise

    from notifications.subscribers import _asset

    notifier = apprise.Apprise(asset=_asset())
    notifier.add(url)
    if not notifier.notify(body="warm-up"):
        raise RuntimeError(f"the endpoint at {url} refused the warm-up send")
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(count):
        if not notifier.notify(body=f"Payslip {n} is ready"):
            raise RuntimeError(f"send {n} to {url} failed")
    return (
        (time.process_time() - cpu) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=300, help="sends per measurement")
    parser.add_argument("--smoke", action="store_true", help="10 sends, for CI")
    parser.add_argument(
        "--serve", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS
    )
    options = parser.parse_args(argv)
    if options.serve:
        cert, key = options.serve
        serve(cert or None, key or None)
        return 0

    from notifications import keepalive

    count = 10 if options.smoke else options.count
    endpoints: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="notifications-bench-") as folder:
        cert, key = write_certificate(Path(folder))
        try:
            for scheme, files in (("json", ("", "")), ("jsons", (str(cert), str(key)))):
                endpoint = subprocess.Popen(
                    [sys.executable, __file__, "--serve", *files],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                endpoints[scheme] = endpoint
                assert endpoint.stdout is not None  # noqa: S101 (stdout=PIPE)
                port = int(endpoint.stdout.readline())
                urls[scheme] = f"{scheme}://{HOST}:{port}/"
            # Verified as Slack's would be: against requests' own bundle of
            # public CAs, which each new connection loads, with this run's
            # certificate added (requests reads the bundle's path from the
            # environment).
            import certifi

            bundle = Path(folder) / "bundle.pem"
            bundle.write_bytes(Path(certifi.where()).read_bytes() + cert.read_bytes())
            os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)

            # Apprise on its own first: keep-alive cannot be undone in a process.
            afresh = {s: cpu_per_send_us(u, count) for s, u in urls.items()}
            keepalive.reuse_connections()
            kept = {s: cpu_per_send_us(u, count) for s, u in urls.items()}
        finally:
            for endpoint in endpoints.values():
                endpoint.kill()
                endpoint.wait(timeout=10)

    print(f"One Apprise send, {count} per measurement, CPU of the sending process:\n")
    print("| endpoint | connecting afresh | kept alive | kept alive ÷ afresh |")
    print("| --- | --- | --- | --- |")
    results = {}
    for scheme, label in (("json", "json:// (HTTP)"), ("jsons", "jsons:// (HTTPS)")):
        (cpu_a, wall_a), (cpu_k, wall_k) = afresh[scheme], kept[scheme]
        print(
            f"| {label} | {cpu_a:,.0f} µs CPU, {wall_a:,.0f} µs wall "
            f"| {cpu_k:,.0f} µs CPU, {wall_k:,.0f} µs wall | {cpu_k / cpu_a:.2f}× |"
        )
        results[scheme] = {"afresh_cpu_us": cpu_a, "kept_alive_cpu_us": cpu_k}
    print("\n" + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
