"""osqueryd-sim: a faithful stand-in for osqueryd.

Owns a daemon speaking osquery's TLS remote API with osquery's client semantics (enroll, config, logger,
distributed, carver), the ``-S --json`` shell against a few real-machine tables, and ``load --hosts N`` for load
tests. It always identifies itself as a simulator and shares no code with ``server_stub`` or ``orbit``.
"""
