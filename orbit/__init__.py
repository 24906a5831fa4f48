"""orbit: the agent daemon (root/SYSTEM).

Owns the options (CLI over ``ORBIT_*`` over defaults, then server overrides), the root-dir layout, Fleet's orbit
API client, the actors (enroller/config poller, osqueryd supervisor, updater, token rotator, desktop launcher),
generic child supervision, the TUF update runner and installer (``orbit/update/``), the device token and
``orbit doctor``. It may import ``osquery_bin_manager`` and nothing else of ours.
"""
