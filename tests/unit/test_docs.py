"""The README matches the code: every setting documented, examples valid."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import orjson

from keywatch.config import ENV_PREFIX, SCRIPT_VARIABLES, Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import DeadLetter
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.config import detection_config_from_mapping

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_every_setting_is_in_the_readme() -> None:
    """Each KEYWATCH_* setting has a row in the configuration table."""
    missing = [
        f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in README
    ]
    assert missing == []


def test_readme_settings_exist() -> None:
    """No row documents a setting the code does not have (the scripts' own variables and the typo example aside)."""
    documented = set(re.findall(r"`(KEYWATCH_[A-Z_]+)\*?`", README)) - {"KEYWATCH_PARTITONS"}
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | SCRIPT_VARIABLES
    unknown = {
        name
        for name in documented - known
        if not name.startswith(("KEYWATCH_TEST_", "KEYWATCH_DEMO", "KEYWATCH_EVAL_"))
    }
    assert unknown == set()


def test_contract_examples_validate() -> None:
    """The request, lifecycle, alert and dead-letter examples are valid messages."""
    examples = [orjson.loads(block) for block in _blocks("json")]
    models = [RequestRecord, LifecycleEvent, Alert, DeadLetter]
    assert len(examples) == len(models)
    for example, model in zip(examples, models, strict=True):
        model.model_validate(example)


def test_toml_example_is_a_valid_config() -> None:
    """The TOML example loads: its [worker] table as settings, its [detection] section as thresholds."""
    (block,) = _blocks("toml")
    document = tomllib.loads(block)
    Settings(**document["worker"])
    detection_config_from_mapping(document["detection"])
