"""Prometheus metrics of the worker. Label values are bounded: topics, outcomes, reason codes, alert types,
detector names (the registered specs' `name`, from `keywatch.core.catalog`).

No tenant, key or IP label values: their cardinality is unbounded and would take Prometheus down.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

from keywatch import __version__
from keywatch.core import catalog, hygiene
from keywatch.progress import ProgressTracker

# Event time to alert emitted: seconds for live traffic, days when replaying a backlog.
DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600, 86400)
PROCESSING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1)


OTHER_TENANT = "_other"
OTHER_DETECTOR = "_other"  # an alert type no registered detector declares (an engine built by hand)


class Metrics:
    """Every keywatch metric, registered on one registry (a fresh one per test)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process: bool = False, tenant_labels: int = 0
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the exposition and nobody graphs them
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:  # process_resident_memory_bytes and friends, for the worker (not for tests)
            ProcessCollector(registry=r)
        # Opt-in, bounded: the first `tenant_labels` tenants seen get their own series, the rest share "_other".
        self.tenant_labels = tenant_labels
        self._tenants: set[str] = set()
        self.tenant_alerts = Counter(
            "keywatch_tenant_alerts",
            "Alerts emitted by tenant and alert type (only with KEYWATCH_METRICS_TENANT_LABELS > 0; tenants "
            "beyond that many are counted as _other).",
            ["tenant", "type"],
            registry=r,
        )
        self.records = Counter(
            "keywatch_records",
            "Input records consumed, by topic and outcome (accepted, rejected).",
            ["topic", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "keywatch_dead_letters",
            "Dead letters the broker acknowledged, by reason code.",
            ["reason"],
            registry=r,
        )
        self.send_failures = Counter(
            "keywatch_send_failures",
            "Messages Kafka did not take, by channel (keyed, alerts, dlq, changelog), reason (too_large, "
            "invalid_record, authorization, topic, rejected: never retried; timeout, unavailable, other) and "
            "action (dropped, or retried after a backoff).",
            ["channel", "reason", "action"],
            registry=r,
        )
        self.alerts = Counter(
            "keywatch_alerts",
            "Alerts emitted, by alert type, severity and status.",
            ["type", "severity", "status"],
            registry=r,
        )
        self.detector_alerts = Counter(
            "keywatch_detector_alerts",
            "Alerts emitted, by the detector that emitted them (its name, as in [detection.<name>]).",
            ["detector"],
            registry=r,
        )
        self._detector_of: dict[str, str] = {}
        self._catalog_version = -1
        self.detection_delay = Histogram(
            "keywatch_detection_delay_seconds",
            "Event time of the triggering event to the alert being emitted, in seconds.",
            ["type"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "keywatch_processing_seconds",
            "Time to process one ingest batch or one keyed message (detect), by step "
            "(the records: keywatch_processed_records).",
            ["step"],
            buckets=PROCESSING_BUCKETS,
            registry=r,
        )
        self.processed_records = Counter(
            "keywatch_processed_records",
            "Records processed, by step (ingest: input records; detect: keyed records, forwards included). "
            "With keywatch_processing_seconds_sum: the time per record.",
            ["step"],
            registry=r,
        )
        self.handoffs = Counter(
            "keywatch_handoffs_processed",
            "Hand-offs detect processed (messages from one key's detection to another key's or the tenant's state); "
            'keywatch_processed_records_total{step="detect"} minus this: the input records detect processed.',
            registry=r,
        )
        self.last_event = Gauge(
            "keywatch_last_event_timestamp_seconds",
            "Event time of the newest record processed, by topic (how far behind = time() - this).",
            ["topic"],
            registry=r,
        )
        self.keys_tracked = Gauge("keywatch_keys_tracked", "Keys with state on this worker.", registry=r)
        self.keys_by_hygiene = Gauge(
            "keywatch_keys_by_hygiene_status",
            "Keys with state on this worker in a hygiene status (overdue for rotation, unused, in a rotation, in a "
            "stalled rotation); a key may be in several.",
            ["status"],
            registry=r,
        )
        for status in hygiene.STATUSES:
            self.keys_by_hygiene.labels(status)
        self.state_bytes = Gauge(
            "keywatch_state_bytes", "Serialised size of the per-key state held by this worker, in bytes.", registry=r
        )
        self.recovering = Gauge(
            "keywatch_recovery_in_progress", "1 while state is being recovered from the changelog.", registry=r
        )
        self.ready = Gauge("keywatch_ready", "1 when connected, assigned and recovered.", registry=r)
        self.rebalances = Counter("keywatch_rebalances", "Consumer group rebalances seen.", registry=r)
        self.keys_evicted = Counter(
            "keywatch_keys_evicted",
            "Keys whose state was dropped to stay under the key cap (least recently seen first).",
            registry=r,
        )
        self.keys_max = Gauge(
            "keywatch_keys_max", "The key cap: most keys with state over all partitions (0 = no cap).", registry=r
        )
        self.broker_connected = Gauge(
            "keywatch_broker_connected", "1 while the worker has a live connection to the Kafka cluster.", registry=r
        )
        self.consumer_lag = Gauge(
            "keywatch_consumer_lag",
            "Records not yet processed, by consumer group and topic: highwater minus the group's committed offset, "
            "summed over this worker's assigned partitions (absent while it cannot be measured).",
            ["group", "topic"],
            registry=r,
        )
        self.partition_stalled = Gauge(
            "keywatch_partition_stalled_seconds",
            "Seconds an assigned partition has had lag without its committed offset moving (0 = progressing or "
            "caught up), by consumer group, topic and partition.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.alertmanager_posted = Counter(
            "keywatch_alertmanager_posted",
            "Alerts Alertmanager accepted (when the sink is on).",
            registry=r,
        )
        self.alertmanager_dropped = Counter(
            "keywatch_alertmanager_dropped",
            "Alerts lost on the way to Alertmanager: queue overflow or refused.",
            registry=r,
        )
        self.webhook_posted = Counter(
            "keywatch_webhook_posted",
            "Alerts the webhook receiver accepted (when KEYWATCH_WEBHOOK_URL is set).",
            registry=r,
        )
        self.webhook_dropped = Counter(
            "keywatch_webhook_dropped",
            "Alerts lost on the way to the webhook: queue overflow, refused by the receiver (4xx), or given up "
            "after every retry.",
            ["reason"],
            registry=r,
        )
        self.build = Info("keywatch_build", "keywatch version.", registry=r)
        self.build.info({"version": __version__})
        self._newest: dict[str, float] = {}
        self._lag_series: set[tuple[str, str]] = set()
        self._stall_series: set[tuple[str, str, str]] = set()

    def observe_event_time(self, topic: str, when: datetime) -> None:
        """Move the newest-event-time gauge of `topic` forward (never back: late events don't rewind it)."""
        ts = when.timestamp()
        if ts > self._newest.get(topic, float("-inf")):
            self._newest[topic] = ts
            self.last_event.labels(topic).set(ts)

    def export_progress(self, tracker: ProgressTracker) -> None:
        """Set the lag and stall gauges from `tracker`; series of partitions no longer measured go away."""
        lag = tracker.lag()
        stalled = {(p.group, p.topic, str(p.partition)): p.stalled_seconds for p in tracker.partitions()}
        for labels in self._lag_series - set(lag):
            self.consumer_lag.remove(*labels)
        for series in self._stall_series - set(stalled):
            self.partition_stalled.remove(*series)
        for (group, topic), records in lag.items():
            self.consumer_lag.labels(group, topic).set(records)
        for (group, topic, partition), seconds in stalled.items():
            self.partition_stalled.labels(group, topic, partition).set(seconds)
        self._lag_series = set(lag)
        self._stall_series = set(stalled)

    def observe_alert(
        self, alert_type: str, severity: str, status: str, event_time: datetime, tenant: str | None = None
    ) -> None:
        """Count an emitted alert and its detection delay (and its tenant, when tenant labels are on)."""
        self.alerts.labels(alert_type, severity, status).inc()
        self.detector_alerts.labels(self._detector(alert_type)).inc()
        if self.tenant_labels and tenant is not None:
            if tenant not in self._tenants and len(self._tenants) < self.tenant_labels:
                self._tenants.add(tenant)
            self.tenant_alerts.labels(tenant if tenant in self._tenants else OTHER_TENANT, alert_type).inc()
        self.detection_delay.labels(alert_type).observe(max(0.0, time.time() - event_time.timestamp()))

    def _detector(self, alert_type: str) -> str:
        """The name of the registered detector that emits `alert_type`: label values come from the catalog, never
        from input."""
        if self._catalog_version != catalog.version():
            self._detector_of = {alert.type: spec.name for spec in catalog.specs() for alert in spec.alerts}
            self._catalog_version = catalog.version()
        return self._detector_of.get(alert_type, OTHER_DETECTOR)
