"""Broker security settings: validation, and what faust and aiokafka are given (never the password in logs)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from keywatch.config import ConfigError, Settings, load_settings
from keywatch.security import aiokafka_kwargs, describe, faust_kwargs, ssl_context


def _ca(tmp_path: Path) -> Path:
    """A throwaway self-signed CA certificate (CN=keywatch-test-ca)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=keywatch-test-ca", "-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.crt")],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return tmp_path / "ca.crt"


def test_plaintext_by_default_gives_no_security_arguments() -> None:
    """Without security settings, aiokafka gets PLAINTEXT and faust no credentials (as before)."""
    settings = Settings()
    assert aiokafka_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_kwargs(settings) == {}
    assert ssl_context(settings) is None


def test_sasl_without_credentials_is_a_configuration_error() -> None:
    """SASL_SSL without a user name and password stops the worker with a message naming both settings."""
    with pytest.raises(ConfigError, match="KEYWATCH_SASL_USERNAME, KEYWATCH_SASL_PASSWORD"):
        load_settings(security_protocol="SASL_SSL")


def test_certificate_without_key_is_a_configuration_error(tmp_path: Path) -> None:
    """A client certificate needs its key (and the files must exist)."""
    ca = _ca(tmp_path)
    with pytest.raises(ConfigError, match="ssl_certfile and ssl_keyfile go together"):
        load_settings(security_protocol="SSL", ssl_certfile=ca)
    with pytest.raises(ConfigError, match="KEYWATCH_SSL_CAFILE"):
        load_settings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")


def test_sasl_ssl_builds_a_tls_context_and_scram_credentials(tmp_path: Path) -> None:
    """SASL_SSL: our own SSLContext (CA, hostname check, TLS 1.2+) goes to both aiokafka and faust's credentials."""
    settings = load_settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="keywatch",
        sasl_password="s3cret-pass",
        ssl_cafile=_ca(tmp_path),
    )
    kwargs = aiokafka_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("keywatch", "s3cret-pass")
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert any(c["subject"] == ((("commonName", "keywatch-test-ca"),),) for c in context.get_ca_certs())
    credentials = faust_kwargs(settings)["broker_credentials"]
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_ssl_only_gives_faust_an_ssl_context(tmp_path: Path) -> None:
    """SSL without SASL: faust gets SSLCredentials wrapping our context (never SSLCredentials(cafile=...))."""
    settings = load_settings(security_protocol="SSL", ssl_cafile=_ca(tmp_path), ssl_check_hostname=False)
    credentials = faust_kwargs(settings)["broker_credentials"]
    assert isinstance(credentials, SSLCredentials)
    assert credentials.context.check_hostname is False
    assert "sasl_mechanism" not in aiokafka_kwargs(settings)


def test_the_password_never_shows(tmp_path: Path) -> None:
    """The SASL password is a secret: not in repr(settings), not in the connection description for the log."""
    settings = load_settings(
        security_protocol="SASL_SSL", sasl_username="keywatch", sasl_password="s3cret-pass", ssl_cafile=_ca(tmp_path)
    )
    assert "s3cret-pass" not in repr(settings)
    assert "s3cret-pass" not in describe(settings)
    assert describe(settings).startswith("SASL_SSL, SCRAM-SHA-512 as keywatch, CA ")
