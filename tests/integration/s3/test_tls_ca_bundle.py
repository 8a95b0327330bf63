"""A private CA for an ``s3://`` repository: ``AWS_CA_BUNDLE`` is honoured, and without it the TLS error says so.

A real HTTPS server on loopback with a certificate from a CA made here answers every request
as S3 does for a missing bucket (``NoSuchBucket``). Reaching that answer proves the TLS
handshake was accepted; a certificate the client does not trust fails before any request.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository

pytest.importorskip("boto3")

NO_SUCH_BUCKET = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>'
    b"<Message>The specified bucket does not exist</Message><BucketName>nk-tls</BucketName></Error>"
)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodekeep test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class _NoSuchBucket(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(NO_SUCH_BUCKET)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(NO_SUCH_BUCKET)

    do_GET = do_HEAD = do_PUT = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def https_endpoint(tmp_path):
    ca, cert, key = _certificates(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchBucket)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "https://127.0.0.1:%d" % server.server_address[1], ca
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nodekeeptest")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nodekeeptestsecret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


def _list_error(url: str) -> str:
    repository = open_repository(url)
    with pytest.raises(NodekeepError) as caught:
        repository.epoch_names("node1")
    return str(caught.value)


def test_aws_ca_bundle_is_trusted_for_an_s3_url(https_endpoint, aws_env):
    endpoint, ca = https_endpoint
    aws_env.setenv("AWS_ENDPOINT_URL", endpoint)
    aws_env.setenv("AWS_CA_BUNDLE", str(ca))
    message = _list_error("s3://nk-tls/fleet")
    # the handshake succeeded: the server's own S3 answer came back
    assert "NoSuchBucket" in message, message


def test_without_the_ca_the_certificate_is_refused(https_endpoint, aws_env):
    endpoint, _ca = https_endpoint
    aws_env.setenv("AWS_ENDPOINT_URL", endpoint)
    message = _list_error("s3://nk-tls/fleet")
    assert "NoSuchBucket" not in message
    assert "certificate" in message.lower() or "ssl" in message.lower(), message


def test_an_explicit_ca_bundle_of_a_target_is_used(https_endpoint, aws_env):
    endpoint, ca = https_endpoint
    repository = open_repository(
        {"type": "s3", "bucket": "nk-tls", "prefix": "fleet", "endpoint_url": endpoint, "ca_bundle": str(ca)}
    )
    with pytest.raises(NodekeepError) as caught:
        repository.epoch_names("node1")
    assert "NoSuchBucket" in str(caught.value), str(caught.value)
