"""orbit: the agent daemon (root/SYSTEM).

Owns the options (CLI over ``ORBIT_*`` over defaults, then server overrides), the root-dir layout, Fleet's orbit
API client, the actors (enroller/config poller, osqueryd supervisor, updater, token rotator, desktop launcher),
generic child supervision, the TUF update runner and installer (``tuf_updates/``), the device token and
``orbit doctor``. It may import ``osquery_bin_manager`` and nothing else of ours.
"""

import sys

# httpx imports its command-line tool (rich, click, pygments: ≈ 6 MiB resident) whenever those happen to be
# installed; the agent never uses it, and a failed import of that one module is what httpx itself expects when they
# are not. Blocking it keeps orbit's footprint down (benchmarks/agent_footprint.py).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
