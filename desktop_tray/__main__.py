"""``fleet-desktop`` / ``python -m desktop_tray``.

After the command returns, a tray backend may have left a non-daemon thread behind (pystray's setup thread when a
backend failed half-way); then the process exits hard rather than hang (python-stack.md §2, pitfall 3).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from desktop_tray.cli import main as cli_main


def main() -> int:
    code = cli_main()
    sys.stdout.flush()
    sys.stderr.flush()
    stray = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if stray:
        logging.getLogger(__name__).warning("event=hard_exit threads=%s", ",".join(t.name for t in stray))
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
