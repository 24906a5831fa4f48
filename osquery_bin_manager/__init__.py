"""Everything about the osqueryd binary that is not generic to every update target (docs/adr/0011).

- ``host_info``: what osqueryd says the host is (``osqueryd -S --json`` on ``system_info``, ``os_version``,
  ``osquery_info``), with a timeout and typed errors
- ``launch_args``: osqueryd's argv the way Fleet builds it (default flags, the flagfile, the flags orbit must control
  after it) and its explicit environment
- ``flagfile``: osquery's flagfile format and the receiver that rewrites it from the server's startup flags

Finding, downloading, verifying and installing the binary is ``tuf_updates`` (the same for orbit, osqueryd and
Fleet Desktop); supervising it is ``orbit.children``. Depends on the standard library and ``safe_fs``.
"""
