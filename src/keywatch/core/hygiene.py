"""Key hygiene status: which keys are overdue for rotation, unused, in a rotation, or in a stalled rotation.

Each hygiene detector says whether a key's state is in its status (a `StatusCheck`, registered here by the
detector's module); `bits` folds them into the bitmask the worker writes into `KeyRegistryEntry.hygiene` with
every state it stores, so the worker can count keys by status from the table's registry entries alone
(`count`, over `keywatch.core.codec.peek`) without decoding any detector's state. The counts are exported as
`keywatch_keys_by_hygiene_status{status}`: no key or tenant label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from keywatch.core.state import KeyRegistryEntry, KeyState

# The statuses, in bit order: bit i of `KeyRegistryEntry.hygiene` is STATUSES[i].
STATUSES: tuple[str, ...] = ("overdue", "unused", "rotation_in_progress", "stalled")
BIT: dict[str, int] = {status: 1 << i for i, status in enumerate(STATUSES)}

StatusCheck = Callable[[KeyState], bool]
_checks: dict[str, list[StatusCheck]] = {status: [] for status in STATUSES}


def register(status: str, check: StatusCheck) -> StatusCheck:
    """Have `check` decide (with any others registered for it) whether a key's state is in `status`."""
    if status not in _checks:
        raise ValueError(f"unknown hygiene status {status!r}: one of {', '.join(STATUSES)}")
    if check not in _checks[status]:
        _checks[status].append(check)
    return check


def unregister(status: str, check: StatusCheck) -> None:
    """Remove a check registered with `register`."""
    if check in _checks.get(status, []):
        _checks[status].remove(check)


def bits(state: KeyState) -> int:
    """The hygiene bitmask of a key's state (0 for a tenant's state, or a key in no hygiene status)."""
    if state.is_tenant:
        return 0
    mask = 0
    for status, checks in _checks.items():
        if any(check(state) for check in checks):
            mask |= BIT[status]
    return mask


def count(entries: Iterable[KeyRegistryEntry]) -> dict[str, int]:
    """Keys per status among `entries` (every status present, 0 when none); a key may be in several."""
    counts = dict.fromkeys(STATUSES, 0)
    for entry in entries:
        mask = entry.hygiene
        if mask:
            for status, bit in BIT.items():
                if mask & bit:
                    counts[status] += 1
    return counts
