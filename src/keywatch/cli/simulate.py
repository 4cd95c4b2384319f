"""`keywatch simulate`: a seeded, realistic traffic scenario with labelled incidents, to files or to Kafka."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.cli.progress import Progress
from keywatch.config import Settings
from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import DEFAULT_START, PLANNED_TYPES, ScenarioConfig, build_plan

_DEFAULT_REQUESTS_TOPIC = str(Settings.model_fields["topic_requests"].default)
_DEFAULT_LIFECYCLE_TOPIC = str(Settings.model_fields["topic_lifecycle"].default)


def _parse_start(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time like 2026-01-05T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no UTC offset (add 'Z')")
    return parsed.astimezone(UTC)


def _say(message: str) -> None:
    click.echo(f"simulate: {message}", err=True)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Write the scenario files here.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same scenario, byte for byte.")
@click.option("--days", type=click.FloatRange(min=0.25, max=60), default=4.0, show_default=True,
              help="Length of the scenario in days (learning period included).")  # fmt: skip
@click.option("--learning-days", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="No incident starts before this (capped at half of --days).")  # fmt: skip
@click.option("--tenants", type=click.IntRange(1, 250), default=20, show_default=True,
              help="Tenants; the keys are spread over them.")  # fmt: skip
@click.option("--keys", type=click.IntRange(1, 20_000), default=200, show_default=True,
              help="Keys at the start (rotations and new keys add ~10%).")  # fmt: skip
@click.option("--start", default="2026-01-05T00:00:00Z", show_default=True, callback=_parse_start,
              help="Scenario start (RFC 3339).")  # fmt: skip
@click.option("--scale", type=click.FloatRange(min=0.001, max=100), default=1.0, show_default=True,
              help="Multiplier on every key's request rate (volume ~3.5M requests at 1.0).")  # fmt: skip
@click.option("--incidents-per-type", type=click.IntRange(min=0), default=None,
              help="Incidents injected per alert type [default: keys / 20].")  # fmt: skip
@click.option("--kafka", "bootstrap", metavar="BOOTSTRAP", help="Produce to Kafka at host:port instead of files.")
@click.option("--rate", type=click.FloatRange(min=1), default=None, help="Kafka: at most N records/s.")
@click.option("--topic-requests", default=_DEFAULT_REQUESTS_TOPIC, show_default=True,
              help="Kafka: the request log topic.")  # fmt: skip
@click.option("--topic-lifecycle", default=_DEFAULT_LIFECYCLE_TOPIC, show_default=True,
              help="Kafka: the key lifecycle topic.")  # fmt: skip
@click.option("--partitions", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="Kafka: partitions of the two topics when they do not exist yet (the simulator creates them, "
              "as the producers of the inputs; the worker never does).")  # fmt: skip
@click.option(
    "--lead",
    type=click.FloatRange(min=0),
    help="Kafka, with --realtime: start the clock this many seconds before the first incident "
    "instead of at the end of the learning period (a demo shows alerts sooner).",
)
@click.option("--realtime", is_flag=True,
              help="Kafka: re-time the scenario so its learning period ends now; send the history at once, "
              "then each record when the wall clock reaches it.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Kafka: stop after this many seconds.")
@click.option("--disorder-seconds", type=click.FloatRange(min=0, max=3600), default=0.0, show_default=True,
              help="Deliver records out of event-time order by up to this many seconds (a random delay per "
              "record, from the seed; labels unchanged). 0: sorted, as before, byte for byte.")  # fmt: skip
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="default", show_default=True,
              help="standard: the plan alone; default: plus the key hygiene situations; hard: plus every other "
              "situation of keywatch.sim.profiles (bursts on busy keys, slow probing, ramps, daily batch jobs, deploy "
              "bumps) and of --hard-network; add --disorder-seconds 30 for late records too.")  # fmt: skip
@click.option("--audit", is_flag=True, help="Files: check afterwards that every label is supported by the data.")
@click.option("--hard-network", is_flag=True,
              help="Add the hard network situations: browsers on residential networks, keys created long before "
              "the logs start, trusted CI runners (files: their [detection.trusted] in keywatch.toml).")  # fmt: skip
def command(
    out_dir: Path | None,
    seed: int,
    days: float,
    learning_days: float,
    tenants: int,
    keys: int,
    start: datetime,
    scale: float,
    incidents_per_type: int | None,
    bootstrap: str | None,
    rate: float | None,
    topic_requests: str,
    topic_lifecycle: str,
    partitions: int,
    realtime: bool,
    lead: float | None,
    duration: float | None,
    disorder_seconds: float,
    profile: str,
    audit: bool,
    hard_network: bool,
) -> None:
    """Generate API request logs and key lifecycle events for many tenants and keys, with labelled incidents.

    With --out-dir: requests.jsonl, lifecycle.jsonl (each sorted by event time, in the contract's JSON form),
    labels.jsonl (one line per injected incident), networks.json (simulated address plan) and scenario.json.
    With --kafka: the same records, interleaved in event-time order, keyed <tenant>/<key_id>; the two topics
    are created first when missing. --disorder-seconds S: the same records, each delayed by up to S seconds,
    so none comes more than S seconds after a record with a later event time.

    \b
    Example (records up to 30 s out of order, as from several gateways):
      keywatch simulate --out-dir sim --seed 7 --disorder-seconds 30
    """
    disorder_ms = int(disorder_seconds * 1000)
    hard_network = hard_network or profile == "hard"  # the hard profile holds every situation
    if audit and disorder_ms:
        raise click.UsageError("--audit reads the files in event-time order: run it without --disorder-seconds")
    if (out_dir is None) == (bootstrap is None):
        raise click.UsageError("give exactly one of --out-dir DIR or --kafka BOOTSTRAP")
    config = ScenarioConfig(
        seed=seed,
        days=days,
        tenants=tenants,
        keys=keys,
        start=start or DEFAULT_START,
        scale=scale,
        learning_days=learning_days,
        incidents_per_type=incidents_per_type,
        hard_network=hard_network,
    )
    began = time.monotonic()
    plan = build_plan(config, PROFILES[profile])
    by_type: dict[str, int] = {}
    for incident in plan.incidents:
        by_type[incident.type] = by_type.get(incident.type, 0) + 1
    wanted = config.per_type
    scheduled = {t: by_type.get(t, 0) for t in PLANNED_TYPES}  # the others come from situations, not per_type
    short = {t: n for t, n in scheduled.items() if 0 < n < wanted}
    if short or (0 in scheduled.values() and wanted and config.end_ms - config.learning_end_ms >= 2 * 3_600_000):
        _say(f"warning: could not place {wanted} incidents of every type (placed {by_type}); try more keys/days")
    _say(
        f"{len(plan.tenants)} tenants, {len(plan.keys)} keys, {len(plan.lifecycle)} lifecycle events, "
        f"{len(plan.incidents)} incidents {by_type}"
    )
    if out_dir is not None:
        from keywatch.sim.generator import write_outputs

        minutes = Progress(
            "simulate",
            max(1, (config.end_ms - config.start_ms) // 60_000),
            "minutes of traffic",
            already_s=time.monotonic() - began,
        )

        def progress(count: int, minute_ms: int) -> None:
            minutes.update((minute_ms - config.start_ms) // 60_000)

        summary = write_outputs(plan, out_dir, progress=progress, disorder_ms=disorder_ms)
        minutes.close(f"{summary.requests:,} requests")
        if hard_network:
            from keywatch.sim.situations_network import trusted_config

            (out_dir / "keywatch.toml").write_text(trusted_config(plan), encoding="utf-8")
            _say(f"trusted CI runner ranges in {out_dir / 'keywatch.toml'}: replay with --config to use them")
        _say(
            f"wrote {summary.requests:,} requests, {sum(summary.lifecycle.values())} lifecycle events, "
            f"{len(plan.incidents)} labels to {out_dir} in {time.monotonic() - began:.1f}s"
        )
        _say(f"lifecycle {summary.lifecycle}; benign changes {summary.benign}")
        if audit:
            from keywatch.sim.audit import audit as run_audit

            report = run_audit(out_dir, config.learning_end_ms)
            _say(f"audit: {len(report.confirmed)}/{len(plan.incidents)} labels supported by the data")
            for label_id, why in report.unsupported.items():
                _say(f"audit: UNSUPPORTED {label_id}: {why}")
            for finding in report.unlabelled[:20]:
                _say(f"audit: UNLABELLED {finding.type} {finding.subject} at {finding.ts_ms}: {finding.detail}")
            if not report.ok:
                sys.exit(1)
        return
    assert bootstrap is not None
    from keywatch.kafka_admin import ensure_topics
    from keywatch.sim.kafka import produce, stderr_progress

    servers = [s.strip() for s in bootstrap.split(",")]
    created = asyncio.run(ensure_topics(servers, [topic_requests, topic_lifecycle], partitions))
    if created:
        _say(f"created topics {', '.join(created)} with {partitions} partitions")
    if realtime:
        _say("realtime: history up to the end of the learning period is sent now, the rest at wall-clock pace")
    result = asyncio.run(
        produce(
            plan,
            bootstrap=bootstrap,
            topic_requests=topic_requests,
            topic_lifecycle=topic_lifecycle,
            rate=rate,
            realtime=realtime,
            lead=lead,
            duration=duration,
            progress=stderr_progress,
            disorder_ms=disorder_ms,
        )
    )
    stderr_progress(result)
    _say("interrupted; flushed what was sent" if result.interrupted else "done")
