"""The client side's small file-system toolkit: what orbit, the update library and orbitctl write, they write here.

- ``atomic_write``: a file is replaced whole or not at all (hidden temp in the same directory created with its final
  mode, fsync, rename, fsync of the directory), also as a stream for large outputs such as packages.
- ``moves``: crash-safe moves of installed files (hidden temporaries, pointer swaps that work on Windows).
- ``file_lock``: non-blocking inter-process locks (flock on POSIX, msvcrt on Windows).
- ``secret_read``: bounded reads of small files that hold secrets or identifiers.

Depends on the standard library only. ``desktop_tray``, ``server_stub`` and ``osquery_sim`` ship or must stand apart
(docs/adr/0002) and keep their own one-module copies.
"""
