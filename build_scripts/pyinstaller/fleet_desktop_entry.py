"""PyInstaller entry script of the frozen ``fleet-desktop`` (the console script ``desktop_tray.__main__:main``)."""

import sys

from desktop_tray.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
