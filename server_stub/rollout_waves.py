"""Which wave a host belongs to: a stable hash of (rollout id, host identity), compared with the waves' percentages.

``point = sha256("<rollout id>:<identity>")`` read as a number in [0, 100); the host is in the first wave whose
cumulative percentage is above its point. The answer depends on nothing else (not on the other hosts, not on the
order of enrollment, not on the time), so a host never moves between waves, hosts enrolling during a rollout take
their place without disturbing anyone, and every server computing it agrees. The rollout id in the hash gives each
rollout its own order, so the same hosts are not always the first to try a new version.

Pure; about a microsecond per host, and memoized (the config endpoint and the engine's passes ask about the same
hosts over and over: 64 Ki entries are a few MB).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

_SCALE = 100.0 / 2**64


@functools.lru_cache(maxsize=65536)
def wave_point(rollout_id: int, identity: str) -> float:
    """The host's place in [0, 100) for this rollout."""
    digest = hashlib.sha256(f"{rollout_id}:{identity}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") * _SCALE


def wave_for_point(point: float, waves: Sequence[float]) -> int:
    """The 0-based wave of a point; ``waves`` are increasing cumulative percentages ending at 100."""
    for index, percent in enumerate(waves):
        if point < percent:
            return index
    return len(waves) - 1  # only reachable through rounding at the very top


def wave_of(rollout_id: int, identity: str, waves: Sequence[float]) -> int:
    return wave_for_point(wave_point(rollout_id, identity), waves)
