"""``python -m orbit.update.conformance_client``: the contract's path of ``tuf_updates.conformance_client``."""

from tuf_updates.conformance_client import main

if __name__ == "__main__":
    raise SystemExit(main())
