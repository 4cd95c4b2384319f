"""keywatch: audit and anomaly detection for API keys, fed from Kafka."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keywatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
