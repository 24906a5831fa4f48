"""Talking to Fleet: orbit's side of the orbit API and everything that follows from its answers.

- enrollment: ``client`` (``OrbitClient``: lazy enroll, node key, 401 handling), ``enroll_secret`` (flag/env, file,
  keystore), ``node_key_store`` (``secret-orbit-node-key.txt``), ``identity_check`` (new machine identity = new host)
- config: ``config_poller`` (30 s ± 10 %, backoff, change-only receivers), ``server_overrides`` (pinned channels,
  fallback paths)
- device token: ``device_token`` (the 0644 identifier file, rotation)
- scripts: ``scripts_receiver`` (pending executions from the config) and ``script_runner`` (running one, bounded)
- ``insecure_proxy``: the localhost TLS relay osqueryd uses with ``--insecure``
"""
