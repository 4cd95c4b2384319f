"""Validators for keywatch's published schemas (schemas/*.schema.json) and the CloudEvents 1.0 JSON schema
(tests/data/cloudevents-1.0.schema.json, the CloudEvents specification's JSON-format schema), with format
checking on: a `date-time` that is not one, or a `uri-reference` that is not one, is an error."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[1]


@cache
def keywatch_validator(name: str) -> jsonschema.protocols.Validator:
    """The validator of one checked-in schema (`alert`, `request`, `lifecycle`, `deadletter`)."""
    schema = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@cache
def cloudevents_validator() -> jsonschema.protocols.Validator:
    """The CloudEvents 1.0 JSON-format schema's validator."""
    schema = json.loads((ROOT / "tests" / "data" / "cloudevents-1.0.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def errors(validator: jsonschema.protocols.Validator, document: Any) -> list[str]:
    """Every error of `document`, one line each (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
