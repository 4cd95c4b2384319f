"""Secrets out: anything in an input record that looks like a bearer token or key secret is replaced by a keyed
hash before keywatch parses, stores, logs or re-emits it (alerts and dead letters included).

The replacement `redacted:<12 hex>` is an HMAC-SHA256 of the secret under a configured key, so analysts can
still see that two records carried the same secret without anyone seeing the secret. It contains no quote,
backslash or percent sign and is a legal identifier, so JSON stays JSON and a secret pasted into `key_id` still
keys state.

The patterns are applied to what a reader of the data sees once it is decoded, not to the bytes as sent: a JSON
record is decoded first and every string in it (object keys included) is redacted, and each string is also
looked at with its escapes undone — percent-encoding (any number of layers, either case of hex) and backslash
escapes (`\\uXXXX`, surrogate pairs, `\\/`, `\\xXX`, ...), in any mix, until nothing changes. A string whose
decoded form holds a secret is replaced by that decoded form with the secret redacted, so no further decoding
can give the secret back. Bytes that cannot be decoded (invalid UTF-8 or JSON, too large) are treated the same
way as one string (`redact`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from collections import Counter
from typing import Any
from urllib.parse import unquote

import orjson

PREFIX = b"redacted:"
_PREFIX_TEXT = PREFIX.decode()

# Larger payloads are not JSON-decoded by `redact_payload` (decoding is the costly part): they are redacted as
# one string, which is just as safe. The worker's default record limit: a larger record is dead-lettered anyway.
DECODE_LIMIT = 64 * 1024
# Layers of encoding undone before giving up on a string; a string still changing after that many is replaced
# whole (nothing legitimate is encoded eight times over).
MAX_LAYERS = 8

# Token characters: no quote, backslash, percent or whitespace, so a JSON string is never broken by the
# replacement. `+` is in: it is a literal character of base64 tokens.
_VALUE_CHARS = r"[A-Za-z0-9\-._~+/=]"
# Blanks between a name and its value: ASCII and Unicode spaces, and `+`, which a query string decodes as one.
_BLANK = r"[\s+\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
# Names of secrets may follow `_` or `-` (`refresh_token`, `x-api-key`) but not a letter or digit.
_START = r"(?<![A-Za-z0-9])"
_NAMES = (
    r"(?:authorization|x-api-key|api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|client[_-]?secret"
    r"|password|passwd|pwd)"
)
_NAMED_VALUE = r"[\"']?(?!(?i:bearer|basic)" + _BLANK + r")(" + _VALUE_CHARS + r"{6,})"
_PATTERNS: list[tuple[re.Pattern[str], int]] = [
    # Authorization: Bearer <token> (group 1 is the secret)
    (re.compile(r"(?i)\bbearer" + _BLANK + r"+(" + _VALUE_CHARS + r"{8,})", re.ASCII), 1),
    # key=value / "key": "value" for names that carry secrets
    (
        re.compile(
            r"(?i)" + _START + _NAMES + r"\b[\"']?" + _BLANK + r"*[=:]" + _BLANK + r"*" + _NAMED_VALUE,
            re.ASCII,
        ),
        1,
    ),
    # JSON Web Tokens
    (re.compile(_START + r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}", re.ASCII), 0),
    # Well-known secret-key prefixes (Stripe-style sk_live_..., keywatch-style kws_...), in any case
    (
        re.compile(_START + r"(?i:sk|rk|kws|secret)_(?i:live|test|sandbox)?_?[A-Za-z0-9]{16,}", re.ASCII),
        0,
    ),
    # Long mixed-case high-entropy tokens: upper, lower and digits, 32+ characters
    (
        re.compile(
            r"(?<![A-Za-z0-9_\-])(?=[A-Za-z0-9_\-]*[A-Z])(?=[A-Za-z0-9_\-]*[a-z])(?=[A-Za-z0-9_\-]*[0-9])"
            r"[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])",
            re.ASCII,
        ),
        0,
    ),
]
# A JSON object's key that names a secret, and the secret at the start of its value (`{"password": "..."}`).
_SECRET_KEY = re.compile(r"(?i)" + _START + _NAMES + r"[\"']?" + _BLANK + r"*$", re.ASCII)
_SECRET_VALUE = re.compile(r"(?i)" + _BLANK + r"*" + _NAMED_VALUE, re.ASCII)
# Cheap pre-check, about 5 us a record instead of 40: a record with none of these words, no "eyJ" and no run
# of 32 token characters cannot match any pattern, so the five regexes are skipped. (Not a bare "key": every
# record has a "key_id" field.) The words are searched in the lowercased text.
_WORDS_RE = r"bearer|api[_-]?key|token|secret|passw|pwd|authorization|sk_|rk_|kws_"
_WORDS = re.compile(_WORDS_RE.encode())
_WORDS_TEXT = re.compile(_WORDS_RE)
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_RUNS = bytes(0x61 if i in _TOKEN_CHARS else 0x20 for i in range(256))
_RUN32 = b"a" * 32
_RUN32_TEXT = re.compile(r"[A-Za-z0-9_\-]{32}", re.ASCII)

# Backslash escapes a reader may undo: JSON's (a surrogate pair as one character; a lone surrogate is left as it
# is, it has no character), and `\xXX`.
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})"
    r"|([\"\\/bfnrt']))"
)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "'": "'"}


def _may_hold_secret(data: bytes) -> bool:
    return b"eyJ" in data or _WORDS.search(data.lower()) is not None or _RUN32 in data.translate(_RUNS)


def _may_hold_secret_text(text: str) -> bool:
    return "eyJ" in text or _WORDS_TEXT.search(text.lower()) is not None or _RUN32_TEXT.search(text) is not None


def _names_secret(key: str) -> bool:
    if "%" not in key and "\\" not in key and not _may_hold_secret_text(key):
        return False
    return _SECRET_KEY.search(unveil(key) or key) is not None


def may_hide_secret(data: bytes) -> bool:
    """Whether `data` can hold a secret, plainly or behind an escape: False means nothing in it, decoded in any
    way, can match a pattern (no escape character, none of the words, no long run)."""
    return b"\\" in data or b"%" in data or _may_hold_secret(data)


def _unescape_one(match: re.Match[str]) -> str:
    high, low, unit, byte, simple = match.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if unit is not None:
        code = int(unit, 16)
        return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)
    if byte is not None:
        return chr(int(byte, 16))
    return _SIMPLE_ESCAPES[simple]


def unveil(text: str) -> str | None:
    """`text` with every layer of percent-encoding and backslash escapes undone, in any order and mix, until
    nothing changes (None when it still changes after `MAX_LAYERS` rounds). Invalid UTF-8 behind percent
    escapes becomes U+FFFD."""
    for _ in range(MAX_LAYERS):
        step = _ESCAPE.sub(_unescape_one, text) if "\\" in text else text
        if "%" in step:
            step = unquote(step, errors="replace")
        if step == text:
            return text
        text = step
    return None


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # invalid input bytes go back as they came
    except UnicodeEncodeError:  # pragma: no cover - only surrogateescape makes lone surrogates here
        return text.encode("utf-8", "replace")


class Redactor:
    """Replaces secret-looking substrings with `redacted:<hmac>`; the key is what makes the hash unguessable."""

    def __init__(self, key: bytes | None = None) -> None:
        self.ephemeral = key is None
        self._key = key if key is not None else secrets.token_bytes(32)

    def token_for(self, secret: bytes) -> bytes:
        """The replacement for one secret."""
        return PREFIX + hmac.new(self._key, secret, hashlib.sha256).hexdigest()[:12].encode()

    def redact_text(self, text: str) -> str:
        """`text` with every secret replaced, also those behind escapes; `text` itself when it holds none.

        A secret that only shows once `text` is decoded (`unveil`) makes the result the decoded text with the
        secret replaced: what a reader would decode to, minus the secret. Idempotent.
        """
        if "%" not in text and "\\" not in text:
            return self._plain(text)
        view = unveil(text)
        if view is None:  # encoded too many times over to tell: all of it goes
            return self._token_text(text)
        found: list[str] = []
        out = self._plain(text, found)
        if view == text:
            return out
        in_view: list[str] = []
        revealed = self._plain(view, in_view)
        if not Counter(in_view) - Counter(found):
            # Decoding shows no secret the text did not show whole: keep the text as it came (its own secrets
            # replaced), so a record that was JSON stays JSON.
            return out
        for secret in found:  # a secret of the encoded form that decoding did not take apart
            if secret in revealed:
                revealed = revealed.replace(secret, self._token_text(secret))
        return revealed

    def redact(self, data: bytes) -> bytes:
        """`data` as one string (invalid UTF-8 kept byte for byte), every secret replaced, also those behind
        escapes; unchanged, the same object, when there is none. A secret behind an escape makes the result
        the decoded text, so it may no longer be valid JSON: for records use `redact_payload`."""
        if not may_hide_secret(data):
            return data
        text = data.decode("utf-8", "surrogateescape")
        out = self.redact_text(text)
        return data if out == text else _encode(out)

    def redact_json(self, value: Any) -> tuple[Any, bool]:
        """A decoded JSON value with every string redacted (object keys included), and whether anything changed.

        Lists and dicts are changed in place (the caller's freshly decoded value). Iterative: orjson decodes
        1,024 levels of nesting, deeper than Python's recursion limit.
        """
        if isinstance(value, str):
            out = self.redact_text(value)
            return out, out != value
        if not isinstance(value, list | dict):
            return value, False
        changed = False
        pending: list[list[Any] | dict[str, Any]] = [value]
        while pending:
            node = pending.pop()
            if isinstance(node, list):
                for i, item in enumerate(node):
                    if type(item) is str:
                        new = self.redact_text(item)
                        if new != item:
                            node[i], changed = new, True
                    elif isinstance(item, list | dict):
                        pending.append(item)
                continue
            items: list[tuple[str, Any]] = []
            dirty = False
            for key, item in node.items():
                new_key, new = self.redact_text(key), item
                if type(item) is str:
                    new = self.redact_text(item)
                elif isinstance(item, list | dict):
                    pending.append(item)
                if _names_secret(key):
                    new = self._named(new)
                dirty = dirty or new_key != key or new is not item
                items.append((new_key, new))
            if dirty:
                node.clear()
                node.update(items)  # a key redacted twice to the same token keeps the last value, as JSON does
                changed = True
        return value, changed

    def redact_payload(self, raw: bytes) -> bytes:
        """Any bytes (a record, a Kafka key) with every secret replaced, so that neither they nor anything they
        decode to (JSON, backslash escapes, percent-encoding) holds one; `raw` itself when it holds none.

        JSON (up to `DECODE_LIMIT` bytes) is decoded and every string redacted (`redact_json`), then written
        back compactly; anything else (invalid UTF-8 or JSON, larger) is redacted as one string (`redact`) and
        never decoded back into a secret. Never raises; idempotent.
        """
        if not may_hide_secret(raw):
            return raw
        if len(raw) <= DECODE_LIMIT:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
            else:
                value, changed = self.redact_json(value)
                if changed or self.redact(raw) != raw:  # also: a secret under a duplicate key, which decoding drops
                    return orjson.dumps(value)
                return raw
        return self.redact(raw)

    def _named(self, value: Any) -> Any:
        """The value of a key that names a secret (`password`, `api_key`...): its leading secret replaced."""
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return value
        text = unveil(str(value))
        if text is None:
            return self._token_text(str(value))
        match = _SECRET_VALUE.match(text)
        if match is None or text.startswith(_PREFIX_TEXT, match.start(1)):
            return value
        return text[: match.start(1)] + self._token_text(match.group(1)) + text[match.end(1) :]

    def _token_text(self, secret: str) -> str:
        return self.token_for(_encode(secret)).decode()

    def _plain(self, text: str, found: list[str] | None = None) -> str:
        """`text` with every pattern's matches replaced, as it stands (no decoding); the secrets replaced are
        appended to `found`."""
        if not _may_hold_secret_text(text):
            return text
        for pattern, group in _PATTERNS:
            text = pattern.sub(functools.partial(self._replace, group=group, found=found), text)
        return text

    def _replace(self, match: re.Match[str], *, group: int, found: list[str] | None) -> str:
        if match.string.startswith(_PREFIX_TEXT, match.start(group)):  # already a replacement
            return match.group(0)
        whole, secret = match.group(0), match.group(group)
        if found is not None:
            found.append(secret)
        start, end = match.start(group) - match.start(0), match.end(group) - match.start(0)
        return whole[:start] + self._token_text(secret) + whole[end:]
