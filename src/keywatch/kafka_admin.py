"""Small Kafka chores outside faust: wait for the broker, make sure keywatch's topics exist.

`security` arguments are the aiokafka keyword arguments from `keywatch.security.aiokafka_kwargs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from keywatch.backoff import Backoff
from keywatch.config import Settings
from keywatch.logs import UNFOLDED
from keywatch.stream.kafka_internals import open_connection

log = logging.getLogger(__name__)


class TopicLimitError(Exception):
    """A topic keywatch writes to cannot take the largest message keywatch may send it: every such message would
    be refused, so the worker does not start."""


class BrokerAuthError(ConnectionError):
    """The broker answered but refused us (credentials) or could not be trusted (TLS): retrying will not help."""


async def diagnose(bootstrap: list[str], security: Mapping[str, Any] | None = None, timeout_s: float = 10.0) -> None:
    """Open one connection to the first bootstrap server; raise BrokerAuthError if TLS or SASL is the problem.

    aiokafka's bootstrap turns every failure into "Unable to bootstrap": one raw connection tells a broker that
    is down (retry) from one that rejects us (stop, and say why).
    """
    host, _, port = bootstrap[0].rpartition(":")
    kwargs = dict(security or {})
    who = f"{kwargs.get('sasl_mechanism', 'SASL')} user {kwargs.get('sasl_plain_username')!r}"
    try:
        conn = await asyncio.wait_for(open_connection(host, int(port), request_timeout_ms=5000, **kwargs), timeout_s)
    except ssl.SSLCertVerificationError as exc:
        raise BrokerAuthError(
            f"TLS: the certificate of the Kafka broker at {bootstrap[0]} is not trusted ({exc.verify_message}); "
            "check KEYWATCH_SSL_CAFILE (the CA that signed the broker certificate) and KEYWATCH_SSL_CHECK_HOSTNAME"
        ) from exc
    except ssl.SSLError as exc:
        raise BrokerAuthError(f"TLS handshake with the Kafka broker at {bootstrap[0]} failed: {exc}") from exc
    except (SaslAuthenticationFailed, IllegalSaslStateError) as exc:
        raise BrokerAuthError(
            f"SASL authentication failed for {who} at {bootstrap[0]}: wrong user name or password "
            f"(KEYWATCH_SASL_USERNAME, KEYWATCH_SASL_PASSWORD) ({exc})"
        ) from exc
    except UnsupportedSaslMechanismError as exc:
        raise BrokerAuthError(
            f"the Kafka broker at {bootstrap[0]} does not accept {who} (KEYWATCH_SASL_MECHANISM): {exc}"
        ) from exc
    except (TimeoutError, OSError, KafkaError):
        return  # down or unreachable: the caller retries
    conn.close()


async def wait_for_broker(
    bootstrap: list[str],
    deadline_s: float = 60.0,
    *,
    security: Mapping[str, Any] | None = None,
    on_attempt: Callable[[bool], None] | None = None,
) -> None:
    """Retry with backoff until the cluster answers a metadata request; raise after `deadline_s` seconds.

    Raises BrokerAuthError at once when the broker rejects the credentials or its certificate is not trusted.
    `on_attempt(reachable)` is told the outcome of every attempt (readiness checks follow it).
    """
    deadline = time.monotonic() + deadline_s
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **(security or {}))
        try:
            await admin.start()
            await admin.list_topics()
            if on_attempt is not None:
                on_attempt(True)
            if attempt > 1:
                log.info("Kafka at %s is reachable (attempt %d)", ",".join(bootstrap), attempt)
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if on_attempt is not None:
                on_attempt(False)
            await diagnose(bootstrap, security)
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"Kafka at {','.join(bootstrap)} did not answer within {deadline_s:.0f}s ({exc})"
                ) from exc
            reason = "no broker answered" if isinstance(exc, KafkaConnectionError) else f"{type(exc).__name__}: {exc}"
            log.warning(
                "Kafka at %s not reachable yet (attempt %d: %s); retrying in %.1fs",
                ",".join(bootstrap),
                attempt,
                reason,
                delay,
                extra=UNFOLDED,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            await admin.close()


class ReplicationError(ValueError):
    """The cluster cannot hold the configured number of replicas of a topic keywatch has to create."""


async def check_replication(
    bootstrap: list[str],
    names: list[str],
    replication: int,
    *,
    creates: Collection[str] | None = None,
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Compare `replication` (KEYWATCH_REPLICATION_FACTOR) with the cluster and the topics `names` keywatch uses;
    log a WARNING for each mismatch and return the warnings. Nothing is altered. `creates`: those of `names` that
    keywatch creates when missing (default: all; never the input topics).

    Raises ReplicationError when the factor exceeds the brokers that answer and a topic still has to be
    created: Kafka would refuse it. When every topic exists already the worker can run without the missing
    brokers, so that case is a warning: a restart while a broker is down must not blind the control.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(security or {}))
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        wanted = list(dict.fromkeys(names))
        existing = set(await admin.list_topics())
        # only topics that exist: a metadata request naming a missing topic auto-creates it on most brokers
        present = [n for n in wanted if n in existing]
        described = (
            {t["topic"]: t for t in await admin.describe_topics(present) if t["error_code"] == 0} if present else {}
        )
    finally:
        await admin.close()
    warnings: list[str] = []
    where = ",".join(bootstrap)
    plural = "broker" if brokers == 1 else "brokers"
    created = set(wanted if creates is None else creates)
    missing = [n for n in wanted if n not in described and n in created]
    if replication > brokers:
        if missing:
            raise ReplicationError(
                f"KEYWATCH_REPLICATION_FACTOR is {replication} but the Kafka cluster at {where} has {brokers} "
                f"{plural}, so it cannot create {', '.join(missing)}: set the factor to at most {brokers}"
            )
        warnings.append(
            f"KEYWATCH_REPLICATION_FACTOR is {replication} but only {brokers} {plural} of the Kafka cluster at "
            f"{where} answer; keywatch's topics exist, so it goes on"
        )
    if replication == 1 and brokers >= 3:
        warnings.append(
            f"KEYWATCH_REPLICATION_FACTOR is 1 on a cluster of {brokers} brokers: losing one broker loses the "
            "state and alerts of the partitions it holds; set it to 3 for production"
        )
    for name, topic in described.items():
        replicas = min((len(p["replicas"]) for p in topic["partitions"]), default=replication)
        if replicas < replication:
            warnings.append(
                f"topic {name} has {replicas} replica{'' if replicas == 1 else 's'}, fewer than "
                f"KEYWATCH_REPLICATION_FACTOR={replication}; keywatch does not alter existing topics "
                "(kafka-reassign-partitions.sh adds replicas)"
            )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


async def ensure_topics(
    bootstrap: list[str],
    names: list[str],
    partitions: int,
    replication: int = 1,
    *,
    security: Mapping[str, Any] | None = None,
    visible_within_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet and wait until the cluster's metadata shows each of them with a
    leader for every partition; return the names created.

    The wait matters for the keyed topic: faust subscribes to it right after start, and a group leader whose
    metadata does not list it yet assigns nobody its partitions ("Ignoring missing topic") and never looks again.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(security or {}))
    await admin.start()
    try:
        wanted = list(dict.fromkeys(names))
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker may win the race
                await admin.create_topics(
                    [NewTopic(name=n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            log.info("created topics %s with %d partitions", ", ".join(missing), partitions)
        await _wait_visible(admin, wanted, visible_within_s)
        return missing
    finally:
        await admin.close()


async def _wait_visible(admin: AIOKafkaAdminClient, names: list[str], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        topics = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in topics
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        pending = [n for n in names if n not in ready]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ConnectionError(
                f"topics {', '.join(pending)} not visible in the cluster metadata after {within_s:.0f}s"
            )
        await asyncio.sleep(0.1)


async def check_message_limits(
    bootstrap: list[str], needs: Mapping[str, int], *, security: Mapping[str, Any] | None = None
) -> None:
    """Raise TopicLimitError naming every topic of `needs` whose `max.message.bytes` is below the bytes keywatch
    needs it to take. A cluster that does not let keywatch read topic configs is not checked (a warning)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(security or {}))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None}) for name in needs]
        )
    except KafkaError as exc:
        log.warning("could not read the topics' max.message.bytes (%s): not checked", exc)
        return
    finally:
        await admin.close()
    short = []
    for response in responses:
        for error_code, _, _, name, entries in response.resources:
            limit = next((int(value) for key, value, *_ in entries if key == "max.message.bytes"), None)
            if error_code or limit is None:
                log.warning("could not read max.message.bytes of %s (error %d): not checked", name, error_code)
            elif limit < needs[name]:
                short.append(f"{name} has max.message.bytes={limit}, keywatch may send it {needs[name]} bytes")
    if short:
        raise TopicLimitError(
            "; ".join(short) + ": raise the topic's max.message.bytes (kafka-configs --alter --entity-type topics "
            "--add-config max.message.bytes=...)"
        )


def input_topics(settings: Settings) -> dict[str, str]:
    """The input topics (which keywatch never creates), each with the setting that names it."""
    return {settings.topic_requests: "KEYWATCH_TOPIC_REQUESTS", settings.topic_lifecycle: "KEYWATCH_TOPIC_LIFECYCLE"}


class MissingInputTopics(ConnectionError):
    """An input topic does not exist (keywatch never creates its inputs) and the setting says to exit."""


def describe_missing(missing: Mapping[str, str]) -> str:
    """`topic (SETTING)` for each missing topic, comma separated."""
    return ", ".join(f"{topic} ({setting})" for topic, setting in missing.items())


async def existing_topics(admin: AIOKafkaAdminClient) -> set[str]:
    """Every topic of the cluster.

    A metadata request naming topics creates the missing ones on a broker with `auto.create.topics.enable=true`
    (aiokafka asks for auto-creation by default); asking for all topics never does.
    """
    return set(await admin.list_topics())


async def wait_for_input_topics(
    bootstrap: list[str],
    inputs: Mapping[str, str],
    *,
    exit_if_missing: bool = False,
    security: Mapping[str, Any] | None = None,
    on_check: Callable[[dict[str, str]], None] | None = None,
    log_every_s: float = 60.0,
    max_delay_s: float = 30.0,
) -> None:
    """Return once every input topic exists (`inputs`: topic -> the setting that names it); never create one.

    While some are missing: raise MissingInputTopics at once if `exit_if_missing`, else re-check with backoff
    (0.5 s doubling to `max_delay_s`), logging the missing topics at the first check and then every `log_every_s`.
    `on_check(missing)` is told the outcome of every check (readiness follows it).
    """
    backoff = Backoff(0.5, max_delay_s)
    logged_at: float | None = None
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(security or {}))
    await admin.start()
    try:
        while True:
            try:
                existing = await existing_topics(admin)
            except (KafkaError, OSError) as exc:  # the broker went away meanwhile: it is a wait either way
                delay = backoff.next()
                log.warning("could not list the topics (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                continue
            missing = {topic: setting for topic, setting in inputs.items() if topic not in existing}
            if on_check is not None:
                on_check(missing)
            if not missing:
                if logged_at is not None:
                    log.info("input topics %s exist now: starting", ", ".join(inputs))
                return
            if len(missing) == 1:
                what, it = f"input topic {describe_missing(missing)} does not exist", "it"
            else:
                what, it = f"input topics {describe_missing(missing)} do not exist", "them"
            if exit_if_missing:
                raise MissingInputTopics(
                    f"{what}; keywatch does not create its input topics: create {it} or correct the setting "
                    "(KEYWATCH_MISSING_INPUT_TOPICS=exit)"
                )
            now = time.monotonic()
            if logged_at is None or now - logged_at >= log_every_s:
                log.warning(
                    "%s; keywatch does not create its input topics: waiting for %s (not ready meanwhile; "
                    "KEYWATCH_MISSING_INPUT_TOPICS=exit stops instead)",
                    what,
                    it,
                )
                logged_at = now
            await asyncio.sleep(backoff.next())
    finally:
        await admin.close()
