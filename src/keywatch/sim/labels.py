"""Incident labels (labels.jsonl): what was injected, on which key, from when to when."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keywatch.contract.events import EventTime, Identifier
from keywatch.parsing import describe_validation_error


class Label(BaseModel):
    """One injected incident: a detector should raise an alert of `type` on this key between start and end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    type: str = Field(min_length=1, description="The alert type that should fire, e.g. apiKey.requestSpike.")
    tenant: Identifier
    key_id: Identifier | Literal[""] = Field(description="The key; empty for an alert about the tenant as a whole.")
    start: EventTime = Field(description="Event time of the incident's first record.")
    end: EventTime = Field(description="Event time of the incident's last record.")
    description: str = ""

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>`."""
        return f"{self.tenant}/{self.key_id}"


class LabelFileError(ValueError):
    """A labels file line is not a label; the message names the file and line."""


def read_labels(path: Path) -> list[Label]:
    """Every label in a labels.jsonl file (blank lines skipped)."""
    labels: list[Label] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                labels.append(Label.model_validate(orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise LabelFileError(f"{path}:{number}: not JSON: {exc.msg}") from None
            except ValidationError as exc:
                reason = describe_validation_error(exc).reason
                raise LabelFileError(f"{path}:{number}: not a label: {reason}") from None
    return labels
