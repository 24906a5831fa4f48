"""What may be published, and under which path: Fleet's layout as orbit's update client defines it.

The repository side reuses ``tuf_updates.targets`` (packager may import ``tuf_updates``), so publisher and
client can never disagree about a file name.
"""

from __future__ import annotations

from tuf_updates.targets import Platform, TargetName, UnknownTargetError, target_spec

PLATFORMS = tuple(p.value for p in Platform)
NAMES = tuple(n.value for n in TargetName)
UnknownTarget = UnknownTargetError


def target_path(name: str, platform: str, channel: str) -> str:
    """``<name>/<platform>/<channel>/<file>``; raises UnknownTarget with a clear message for any mistake."""
    return target_spec(name, platform, channel).path
