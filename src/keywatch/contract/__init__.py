"""The event contract: what keywatch reads (request log, lifecycle events) and writes (alerts, dead letters)."""

from keywatch.contract.alerts import Alert, AlertData, Severity
from keywatch.contract.deadletter import DeadLetter
from keywatch.contract.events import Env, LifecycleEvent, LifecycleType, RequestRecord

__all__ = [
    "Alert",
    "AlertData",
    "DeadLetter",
    "Env",
    "LifecycleEvent",
    "LifecycleType",
    "RequestRecord",
    "Severity",
]
