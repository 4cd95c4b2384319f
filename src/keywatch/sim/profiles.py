"""Scenario profiles for `keywatch simulate --profile`: the default scenario, plus lists of situations.

A situation is a function of the planner run after the default scenario is planned; adding one to a profile
is one line in `PROFILES`.
"""

from __future__ import annotations

from keywatch.sim import (
    situations_browser,
    situations_environment,
    situations_hygiene_age,
    situations_lifecycle,
    situations_rate,
    situations_rotation,
    situations_sharing,
)
from keywatch.sim.situations_rate import Situation

# The key hygiene situations of issue #13, in the default profile and the hard one. The lifecycle situations
# come after the others that plan lifecycle events (their operations are placed where the actor does nothing
# else within the burst window), and the age situations last: they add a tenant with a long request history,
# which no other situation may pick (a key learning in a tenant with history is judged against it).
HYGIENE: tuple[Situation, ...] = (
    *situations_browser.SITUATIONS,
    *situations_rotation.SITUATIONS,
    *situations_environment.SITUATIONS,
    *situations_sharing.SITUATIONS,
    *situations_lifecycle.SITUATIONS,
    *situations_hygiene_age.SITUATIONS,
)

PROFILES: dict[str, tuple[Situation, ...]] = {
    "standard": (),  # the standard plan alone (tenants, keys, benign changes and the four planned incident types)
    "default": HYGIENE,  # the standard plan, then the key hygiene situations
    "hard": (*situations_rate.SITUATIONS, *HYGIENE),  # and every situation of issue #12
}
