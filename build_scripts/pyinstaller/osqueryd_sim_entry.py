"""PyInstaller entry script of the frozen ``osqueryd-sim`` (the console script ``osquery_sim.__main__:main``)."""

import sys

from osquery_sim.cli import main  # what osquery_sim.__main__ re-exports as main

if __name__ == "__main__":
    sys.exit(main())
