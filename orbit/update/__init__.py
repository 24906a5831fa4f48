"""Compatibility entry points: the update library moved to ``tuf_updates`` (docs/adr/0011). Only the contract's
``python -m orbit.update.conformance_client`` stays here."""
