"""Key-management attempt (apiKey.keyManagementAttempt): a key used on a key-management path of the REST API.

Keys are managed only in the portal, by a Tenant Admin with MFA; the API manages no keys. A request with a key
to `/v1/keys`, `/v1/api-keys`, `/v1/credentials` or `/v1/tokens` (the default `path_patterns`), whatever the
answer, is a key trying to mint keys, widen its own scope or rotate itself: a compromised key.

The path is matched without its query string, percent-decoded, with repeated slashes collapsed and `.` segments
dropped, case-insensitively: `/v1//KEYS`, `/v1/%6beys` and `/v1/./keys` are `/v1/keys`.

Once per key per UTC hour: the alert id is the key and the hour of its first such request, so re-processing gives
the same id; later attempts in the hour are counted and reported in the next alert.

State: `KeyManagementState`, under `key_management`, only for keys that made such a request.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "key_management"
ALERT_TYPE = "apiKey.keyManagementAttempt"
HOUR_MS = 3_600_000
DEFAULT_PATTERNS = (r"^/v\d+/(api[-_]?keys|keys|credentials|tokens)(/|$)",)
PATH_CHARS = 96
_SLASHES = re.compile(r"/{2,}")


class KeyManagementState(msgspec.Struct, array_like=True, gc=False):
    """Key-management requests of one key: the hours alerted and counts."""

    hour: int  # epoch hour of the latest alert
    prev_hour: int  # ... and of the one before it (a late record of that hour is not a new alert)
    attempts_hour: int  # attempts in `hour`
    total: int  # attempts ever
    suppressed: int  # attempts since the last alert, not alerted
    first_ms: int  # event time of the first attempt


class KeyManagementConfig(BaseModel):
    """Settings of the key-management-attempt detector (`[detection.key_management]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path_patterns: tuple[str, ...] = Field(
        default=DEFAULT_PATTERNS,
        min_length=1,
        description="Regular expressions of key-management paths, matched case-insensitively on the normalised "
        "path (no query, percent-decoded, repeated slashes collapsed).",
    )

    @field_validator("path_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"path pattern {pattern!r} is not a regular expression: {exc}") from None
        return patterns


def normalise_path(path: str) -> str:
    """The path a router sees: no query or fragment, percent-decoded, repeated slashes collapsed, no `.`
    segments."""
    end = path.find("?")
    if end >= 0:
        path = path[:end]
    if "#" in path:
        path = path.split("#", 1)[0]
    if "%" in path:
        path = unquote(path).split("?", 1)[0]
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/./" in path or path.endswith("/."):
        path = "/".join(part for part in path.split("/") if part != ".") or "/"
    return path


class KeyManagement(Detector[KeyManagementState]):
    """Alerts (once per key per UTC hour) when a key is used on a key-management path."""

    def __init__(self, config: KeyManagementConfig) -> None:
        self.config = config
        joined = "|".join(f"(?:{p})" for p in config.path_patterns)
        self._pattern = re.compile(joined, re.IGNORECASE)
        # Every path the default patterns match holds "key", "cred" or "token" (lowercased), or a '%' that may
        # decode to one: with the defaults, a path without any is no match, without running the patterns.
        self._prefilter = tuple(config.path_patterns) == DEFAULT_PATTERNS

    def matches(self, path: str) -> bool:
        """Whether `path` (as logged) is a key-management path."""
        if self._prefilter:
            low = path.lower()
            if "key" not in low and "cred" not in low and "token" not in low and "%" not in low:
                return False
        return self._pattern.search(normalise_path(path)) is not None

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Find (once per UTC hour) a request of the key on a key-management path."""
        if not self.config.enabled or not self.matches(record.path):
            return None
        hour = ts_ms // HOUR_MS
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = KeyManagementState(-1, -1, 0, 0, 0, ts_ms)
        st.total += 1
        st.first_ms = min(st.first_ms, ts_ms)
        if hour == st.hour:
            st.attempts_hour += 1
        if hour in (st.hour, st.prev_hour) or hour < st.hour - 1:  # alerted that hour (or too late to tell)
            st.suppressed += 1
            return None
        if hour > st.hour:
            st.prev_hour, st.hour, st.attempts_hour = st.hour, hour, 1
        else:
            st.prev_hour = hour
        suppressed, st.suppressed = st.suppressed, 0
        accepted = record.status < 400
        path = record.path.split("?", 1)[0][:PATH_CHARS]
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=(str(hour),),
                summary=(
                    f"Key {record.key_id} was used on the key-management path {record.method} {path} from"
                    f" {record.ip} (-> {record.status}): the API manages no keys, a compromised key tries to."
                ),
                evidence={
                    "method": record.method,
                    "path": path,
                    "normalised_path": normalise_path(record.path)[:PATH_CHARS],
                    "status": record.status,
                    "accepted": accepted,
                    "ip": record.ip,
                    "user_agent": (record.user_agent or "")[:PATH_CHARS] or None,
                    "request_id": record.request_id,
                    "first_attempt_at": format_time(ts_ms),
                    "hour": format_time(hour * HOUR_MS),
                    "attempts_this_hour": st.attempts_hour if hour == st.hour else 1,
                    "attempts_total": st.total,
                    "suppressed_since_last_alert": suppressed,
                    "first_attempt_ever_at": format_time(st.first_ms),
                },
            )
        ]


def _build(config: KeyManagementConfig, context: BuildContext) -> KeyManagement:
    return KeyManagement(config)


SPEC: DetectorSpec[KeyManagementConfig, KeyManagementState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "high"),),
    config=KeyManagementConfig,
    state=KeyManagementState,
    build=_build,
    summary=ALERT_TYPE,
)
