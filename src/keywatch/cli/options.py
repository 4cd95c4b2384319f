"""What every `keywatch` command shares: -h as well as --help, and help texts up to 120 columns wide.

Set on each command as well as on the group: click caches a command's help option the first time it builds
one, so a command invoked on its own (as the tests do) must carry the settings itself.
"""

from __future__ import annotations

from typing import Any

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
