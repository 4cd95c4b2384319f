"""Scenario profiles for `keywatch simulate --profile`: the default scenario, plus lists of situations.

A situation is a function of the planner run after the default scenario is planned; adding one to a profile
is one line in `PROFILES`.
"""

from __future__ import annotations

from keywatch.sim import situations_hygiene_age, situations_rate
from keywatch.sim.situations_rate import Situation

PROFILES: dict[str, tuple[Situation, ...]] = {
    "default": (*situations_hygiene_age.SITUATIONS,),  # the standard plan, then the key-hygiene situations (#13)
    "hard": (*situations_rate.SITUATIONS, *situations_hygiene_age.SITUATIONS),  # every situation of #12 and #13
}
