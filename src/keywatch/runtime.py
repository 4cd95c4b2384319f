"""Building the engine from configuration: one place, so the worker and replay run the same detectors."""

from __future__ import annotations

import logging
from pathlib import Path

from keywatch.config import ConfigError, Settings, config_path
from keywatch.core.config import load_detection_config
from keywatch.core.engine import Engine
from keywatch.core.wiring import build_engine
from keywatch.geo import Geoip2Lookup, GeoLookup

log = logging.getLogger("keywatch.runtime")


def make_geo(asn_db: Path | None, country_db: Path | None) -> GeoLookup | None:
    """GeoIP2 lookups when databases are configured, else None (ranges only)."""
    if asn_db is None and country_db is None:
        return None
    try:
        return Geoip2Lookup(asn_db=asn_db, country_db=country_db)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot open the GeoIP databases: {exc}") from None


def make_engine(
    settings: Settings,
    config_file: Path | None = None,
    *,
    asn_db: Path | None = None,
    country_db: Path | None = None,
) -> Engine:
    """The engine with every detector, thresholds from the [detection] section of the config file."""
    detection = load_detection_config(config_path(config_file))
    for line in detection.trusted.describe():  # the worker and replay both start here
        log.info("%s", line)
    if detection.tenant:
        tenants = ", ".join(detection.tenant)
        log.info("per-tenant detection settings for %d tenant(s): %s", len(detection.tenant), tenants)
    geo = make_geo(asn_db or settings.geoip_asn_db, country_db or settings.geoip_country_db)
    return build_engine(detection, settings.alert_source, geo, runbook_base=settings.runbook_base_url)
