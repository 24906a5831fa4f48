"""orbit: the agent daemon (root/SYSTEM), in wings (docs/adr/0011):

- top: ``__main__`` (run | version | doctor), ``agent`` (wires the actors, decides nothing), ``reactions`` (the
  agent's decisions, pure), ``agent_state`` (``state/status.json``), ``actors`` (keep-alive and start-up retries),
  ``doctor``, ``windows_service``; the base below every wing: ``options``, ``root_layout``, ``timings``,
  ``version``, ``logging_setup``
- ``fleet/``: talking to Fleet (enroll, config, device token, scripts)
- ``children/``: osqueryd and fleet-desktop under one supervisor, the GUI session per OS
- ``self_update/``: update setup, trial boot, quarantine
- ``extension/``: orbit's osquery extension (``orbit_info``, ``fleetd_logs``)

It may import ``tuf_updates``, ``osquery_bin_manager`` and ``safe_fs``, nothing else of ours; the wings do not
import each other (.importlinter).
"""

import sys

# httpx imports its command-line tool (rich, click, pygments: ≈ 6 MiB resident) whenever those happen to be
# installed; the agent never uses it, and a failed import of that one module is what httpx itself expects when they
# are not. Blocking it keeps orbit's footprint down (benchmarks/agent_footprint.py).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
