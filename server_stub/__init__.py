"""fleet-stub: a minimal but conformant Fleet server.

Owns the ASGI app (starlette + uvicorn) with the osquery TLS API, Fleet's orbit API, the device API and My
device page for Fleet Desktop, the admin REST API and ``/metrics``, static TUF repository hosting, the SQLite
store, the self-signed TLS material and the ``fleet-stub`` CLI. It shares no code with the clients (orbit,
fleet-desktop, osqueryd-sim): it re-derives every schema from docs/reference/fleet-api.md so that a wrong field name on
either side fails a test instead of passing silently (docs/adr/0002).
"""

__version__ = "0.1.0"
