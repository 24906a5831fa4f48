"""``python -m osquery_sim`` is ``osqueryd-sim``."""

from __future__ import annotations

import sys

from osquery_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
