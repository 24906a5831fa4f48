"""A small client for the running server's admin API, found through ``DIR/server.json`` (used by the CLI)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from server_stub.json_fields import JsonObject


class AdminClientError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerInfo:
    url: str
    ca_cert: str | None
    admin_token: str


def read_server_info(data_dir: Path) -> ServerInfo:
    path = data_dir / "server.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdminClientError(
            f"no running fleet-stub found: {path} does not exist (is `fleet-stub serve` running?)"
        ) from None
    except (OSError, ValueError) as exc:
        raise AdminClientError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("url"), str) or not isinstance(raw.get("admin_token"), str):
        raise AdminClientError(f"{path} is not a fleet-stub server.json")
    ca = raw.get("ca_cert")
    return ServerInfo(url=raw["url"], ca_cert=ca if isinstance(ca, str) else None, admin_token=raw["admin_token"])


class AdminClient:
    def __init__(self, info: ServerInfo, timeout: float = 60.0) -> None:
        context = ssl.create_default_context(cafile=info.ca_cert) if info.ca_cert else ssl.create_default_context()
        self._client = httpx.Client(
            base_url=info.url,
            verify=context,
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"Authorization": f"Bearer {info.admin_token}"},
            trust_env=False,
        )

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, body: object | None = None) -> JsonObject:
        try:
            response = self._client.request(method, "/api/latest/fleet" + path, json=body)
        except httpx.HTTPError as exc:
            raise AdminClientError(f"cannot reach fleet-stub: {exc}") from None
        try:
            decoded = response.json() if response.content else {}
        except ValueError:
            decoded = {}
        if response.status_code >= 400:
            reason = ""
            if isinstance(decoded, dict):
                errors = decoded.get("errors")
                if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                    reason = str(errors[0].get("reason", ""))
            raise AdminClientError(f"{method} {path} failed: HTTP {response.status_code} {reason}".rstrip())
        return decoded if isinstance(decoded, dict) else {}
