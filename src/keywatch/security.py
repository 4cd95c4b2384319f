"""How keywatch authenticates to Kafka: one place turns the settings into what faust and aiokafka expect.

TLS uses an `ssl.SSLContext` we build ourselves (faust 0.15.3's `SSLCredentials(cafile=...)` raises
TypeError); SASL (PLAIN or SCRAM) carries the user name and the password, which stays a
`SecretStr` until the moment a client needs it.
"""

from __future__ import annotations

import ssl
from typing import Any

from keywatch.config import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL (None for the plaintext protocols)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    return context


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    kwargs: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return kwargs


def faust_kwargs(settings: Settings) -> dict[str, Any]:
    """`broker_credentials` for faust.App (empty for PLAINTEXT)."""
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        credentials: Any = SASLCredentials(
            username=settings.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
        return {"broker_credentials": credentials}
    if context is not None:
        return {"broker_credentials": SSLCredentials(context)}
    return {}


def describe(settings: Settings) -> str:
    """How the worker connects, for the log (never the password)."""
    parts: list[str] = [settings.security_protocol]
    if settings.security_protocol.startswith("SASL_"):
        parts.append(f"{settings.sasl_mechanism} as {settings.sasl_username}")
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        parts.append(f"CA {settings.ssl_cafile or 'system store'}")
        if not settings.ssl_check_hostname:
            parts.append("hostname NOT checked")
    return ", ".join(parts)
