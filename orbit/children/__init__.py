"""The processes orbit supervises: osqueryd and fleet-desktop, two specs of one mechanism.

- ``supervisor`` (``Supervisor(ChildSpec)``: own process group, restart with backoff, crash-loop breaker, pidfile,
  stale-process clean-up) and ``restart_policy`` (the pure backoff schedule)
- ``osqueryd_child``: osqueryd's executable, argv (``osquery_bin_manager.launch_args``) and environment
- ``desktop_child`` + ``desktop_launch``: fleet-desktop started as the user of the active GUI session
- ``gui_session``: finding that session, one module per OS (``gui_session_linux``, ``gui_session_macos``,
  ``gui_session_windows``) behind one ``GuiSessionFinder`` protocol
"""
