"""``python -m packager`` is ``orbitctl``."""

from __future__ import annotations

import sys

from packager.cli import main

if __name__ == "__main__":
    sys.exit(main())
