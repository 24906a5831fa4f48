"""PyInstaller entry script of the frozen ``orbit`` (the console script ``orbit.__main__:main``)."""

import sys

from orbit.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
