"""fleet-desktop: the per-user tray app.

Owns the device-API client, the pure menu state machine, icons (Pillow), the pystray adapter and browser opening.
It imports no other package of ours: it ships as its own binary.

Layout (pure core first, I/O shell after):

* ``config`` — the ``FLEET_DESKTOP_*`` environment contract → ``DesktopConfig``;
* ``desktop_summary``, ``server_answers`` — the server's JSON and the outcomes of a check, as typed values;
* ``menu_state`` — the menu as a pure state machine (state + answer → state → ``{title, enabled, visible}`` items);
* ``controller`` — schedule (token watch 1 s, checks 5 s, summary 5 min, reachability 1 min) and clicks, with an
  injected clock; ``browser`` — the page URLs and the default opener;
* ``token_file``, ``device_client``, ``tls_setup`` — the token file, the device API over httpx, TLS/mTLS;
* ``icons``, ``tray_backend``, ``tray_adapter``, ``notifier`` — drawing, finding and driving a tray, or notifying;
* ``instance_lock``, ``user_paths``, ``log_setup``, ``status_file``, ``signal_bridge`` — process housekeeping;
* ``app`` — the threads; ``cli`` / ``__main__`` — the ``fleet-desktop`` command.
"""
