"""Where keywatch reads faust's and aiokafka's private attributes: one function per need, each with why and the
versions it was checked against (faust-streaming 0.15.3, aiokafka 0.14.0). Re-check them on every upgrade."""

from __future__ import annotations

from typing import Any


def faust_internal_topics(app: Any) -> list[str]:
    """The topics faust creates for `app` at start-up: every table's changelog and the leader assignor's topic.

    keywatch checks their replication against the cluster before faust starts (and fails with a clear message
    instead of faust's traceback). faust has no public list of them: the leader topic's name is
    `LeaderAssignor._leader_topic_name` (faust 0.15.3: f"{conf.id}-__assignor-__leader", declared with
    `topic_replication_factor` like the changelogs).
    """
    names = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    names.append(str(app._leader_assignor._leader_topic_name))
    return names
