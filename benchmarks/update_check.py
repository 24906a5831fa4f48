"""Update-path figures (issue 4): what a check costs when nothing changed, how fast a verified download is next to
a raw httpx stream of the same file, and how long ``orbitctl updates add`` takes for a large target.

Everything runs on loopback in one process run: a repository made with ``orbitctl updates``, served over TLS by
``fleet-stub serve --tuf-repo``, read by orbit's ``UpdateClient``. Baselines are measured in the same run.

    .venv/bin/python benchmarks/update_check.py [--size-mb 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.repository_client import UpdateClient

PASSPHRASES = {
    f"ORBITCTL_{role.upper()}_PASSPHRASE": f"{role}-bench-passphrase"
    for role in ("root", "targets", "snapshot", "timestamp")
}


def orbitctl(*args: str) -> float:
    env = {**os.environ, **PASSPHRASES}
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "packager", "updates", *args],
        env=env,
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def start_stub(data: Path, repo: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server_stub",
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--tuf-repo",
            str(repo),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        path = data / "server.json"
        if path.is_file():
            info: dict[str, str] = json.loads(path.read_text())
            if int(info["pid"]) == proc.pid:
                return proc, info
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("fleet-stub did not start")


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def on_response(self, response: httpx.Response) -> None:
        self.requests += 1
        self.bytes += int(response.headers.get("content-length", "0") or 0)


def measure(size_mb: int) -> dict[str, float | int]:
    work = Path(tempfile.mkdtemp(prefix="update-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        repo = work / "repo"
        orbitctl("init", "--path", str(repo))
        big = work / "osqueryd"
        with big.open("wb") as handle:
            for _ in range(size_mb):
                handle.write(os.urandom(1 << 20))
        add_seconds = orbitctl(
            "add",
            "--path",
            str(repo),
            "--target",
            str(big),
            "--name",
            "osqueryd",
            "--platform",
            "linux",
            "--version",
            "5.14.1",
            "-t",
            "stable",
        )
        small_add = orbitctl(
            "add",
            "--path",
            str(repo),
            "--target",
            str(work / "repo" / "repository" / "1.root.json"),
            "--name",
            "orbit",
            "--platform",
            "linux",
            "--version",
            "1.0.0",
            "-t",
            "stable",
        )
        proc, info = start_stub(work / "stub", repo / "repository")
        root = (repo / "repository" / "1.root.json").read_bytes()
        counter = Counter()
        http = build_http_client(TlsOptions(root_ca=Path(info["ca_cert"])), user_agent="bench", trust_env=False)
        http.event_hooks["response"] = [counter.on_response]
        client = UpdateClient(work / "metadata", info["tuf_url"], bootstrap_root=root, http=http)
        client.refresh()
        target = client.lookup("osqueryd", "linux", "stable")
        assert target is not None
        began = time.perf_counter()
        client.download(target, work / "staging")
        verified_seconds = time.perf_counter() - began
        counter.requests, counter.bytes = 0, 0
        check_began = time.perf_counter()
        client.refresh()  # nothing changed since the last check
        check_seconds = time.perf_counter() - check_began
        no_change_requests, no_change_bytes = counter.requests, counter.bytes
        raw_url = f"{info['tuf_url']}/targets/osqueryd/linux/stable/osqueryd"
        context = ssl.create_default_context(cafile=info["ca_cert"])
        with httpx.Client(verify=context, trust_env=False, timeout=60) as raw:
            began = time.perf_counter()
            with raw.stream("GET", raw_url) as response, (work / "raw").open("wb") as out:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
            raw_seconds = time.perf_counter() - began
        http.close()
        size = size_mb * (1 << 20)
        return {
            "no_change_requests": no_change_requests,
            "no_change_bytes": no_change_bytes,
            "no_change_seconds": round(check_seconds, 4),
            "verified_download_mb_per_s": round(size / verified_seconds / (1 << 20), 1),
            "raw_httpx_mb_per_s": round(size / raw_seconds / (1 << 20), 1),
            "verified_vs_raw_ratio": round(raw_seconds / verified_seconds, 2),
            "orbitctl_add_seconds": round(add_seconds, 2),
            "orbitctl_add_small_seconds": round(small_add, 2),
            "size_mb": size_mb,
        }
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.size_mb)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"check with nothing new: {figures['no_change_requests']} requests, {figures['no_change_bytes']} bytes, "
        f"{figures['no_change_seconds']} s   (goal ≤ 2 requests, ≤ 4 KB)"
    )
    print(
        f"verified download of {figures['size_mb']} MB: {figures['verified_download_mb_per_s']} MB/s; raw httpx "
        f"stream of the same file: {figures['raw_httpx_mb_per_s']} MB/s; ratio {figures['verified_vs_raw_ratio']}× "
        "(goal ≥ 0.8×)"
    )
    print(
        f"orbitctl updates add, {figures['size_mb']} MB: {figures['orbitctl_add_seconds']} s "
        f"(baseline: a tiny file {figures['orbitctl_add_small_seconds']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
