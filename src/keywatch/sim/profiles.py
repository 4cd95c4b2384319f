"""Scenario profiles for `keywatch simulate --profile`: the default scenario, plus lists of situations.

A situation is a function of the planner run after the default scenario is planned; adding one to a profile
is one line in `PROFILES`.
"""

from __future__ import annotations

from keywatch.sim import situations_rate, situations_sharing
from keywatch.sim.situations_rate import Situation

PROFILES: dict[str, tuple[Situation, ...]] = {
    "default": (*situations_sharing.SITUATIONS,),  # the standard plan, then the hygiene situations of issue #13
    "hard": (*situations_rate.SITUATIONS, *situations_sharing.SITUATIONS),  # every situation
}
