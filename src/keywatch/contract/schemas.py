"""JSON Schemas generated from the contract models; the checked-in copies under schemas/ must match."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import DeadLetter
from keywatch.contract.events import LifecycleEvent, RequestRecord

# file name -> (model, mode): inputs are described as accepted, outputs as emitted.
SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "request.schema.json": (RequestRecord, "validation"),
    "lifecycle.schema.json": (LifecycleEvent, "validation"),
    "alert.schema.json": (Alert, "serialization"),
    "deadletter.schema.json": (DeadLetter, "serialization"),
}


def render(model: type[BaseModel], mode: str, alert_types: Iterable[str]) -> str:
    """The schema text for one model, stable across runs; an alert's `type` is one of `alert_types` (the
    registered detectors' types: `keywatch.core.catalog.alert_types()`, which the contract cannot import)."""
    schema: dict[str, Any] = model.model_json_schema(mode=mode)  # type: ignore[arg-type]
    if model is Alert:
        schema["properties"]["type"]["enum"] = sorted(set(alert_types))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path, alert_types: Iterable[str]) -> list[Path]:
    """Write every schema file into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    types = list(alert_types)
    written = []
    for name, (model, mode) in SCHEMAS.items():
        path = directory / name
        path.write_text(render(model, mode, types))
        written.append(path)
    return written


def drifted(directory: Path, alert_types: Iterable[str]) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    types = list(alert_types)
    out = []
    for name, (model, mode) in SCHEMAS.items():
        path = directory / name
        if not path.exists() or path.read_text() != render(model, mode, types):
            out.append(name)
    return out
