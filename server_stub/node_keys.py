"""Node keys and other random credentials, generated the way Fleet does (base64 of 24 random bytes)."""

from __future__ import annotations

import base64
import secrets

NODE_KEY_BYTES = 24


def new_node_key() -> str:
    return base64.b64encode(secrets.token_bytes(NODE_KEY_BYTES)).decode("ascii")


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)
