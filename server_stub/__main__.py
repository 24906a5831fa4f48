"""``python -m server_stub`` is ``fleet-stub``."""

from __future__ import annotations

import sys

from server_stub.cli import main

if __name__ == "__main__":
    sys.exit(main())
