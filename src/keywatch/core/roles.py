"""Role ranks: how much a key may do, as a number, for the rules that compare roles (`apiKey.privilegeEscalated`).

`[detection.roles]` maps role names to ranks (integers, higher = more privilege); a role without an entry
ranks by its name (case-insensitive, by substring, the highest tier found wins):

    admin, owner, root                3
    write, manage, full               2
    read, readonly, view, reporting   1
    anything else                     2

So `read_only` and `reporting` rank 1, `standard` and `payments_write` 2, `admin` and `org-owner` 3, and
`read_write` 2 (write beats read). Substrings can mislead (`non_admin` ranks 3): name such roles in
`[detection.roles]`.
"""

from __future__ import annotations

from collections.abc import Iterable

TIERS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (3, ("admin", "owner", "root")),
    (2, ("write", "manage", "full")),
    (1, ("read", "readonly", "view", "reporting")),
)
OTHER_RANK = 2
MAX_ROLES = 256  # entries of `[detection.roles]`
MAX_ROLE_LENGTH = 64  # as long as a lifecycle event's `role` may be


def default_rank(role: str) -> int:
    """The rank of `role` from its name alone (see the module docstring)."""
    name = role.lower()
    for rank, words in TIERS:
        if any(word in name for word in words):
            return rank
    return OTHER_RANK


class RoleRanks:
    """The ranks of `[detection.roles]` (looked up case-insensitively), with `default_rank` for the others."""

    def __init__(self, table: Iterable[tuple[str, int]] = ()) -> None:
        self.table = {name.lower(): rank for name, rank in table}
        self._cache: dict[str, int] = {}

    def rank(self, role: str) -> int:
        """The rank of `role`."""
        found = self._cache.get(role)
        if found is None:
            found = self.table.get(role.lower())
            if found is None:
                found = default_rank(role)
            if len(self._cache) < 4096:
                self._cache[role] = found
        return found
