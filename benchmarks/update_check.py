"""Update-path figures (issues 4 and 19): what a check costs when nothing changed — requests, connections and bytes
on the wire (TLS included, through a counting relay) — how fast a verified download is next to a raw httpx stream of
the same file, and how long ``orbitctl updates add`` takes for a large target.

Everything runs on loopback in one process run: a repository made with ``orbitctl updates``, served over TLS by
``fleet-stub serve --tuf-repo``, read by orbit's ``UpdateClient``. Each figure is measured ``--rounds`` times,
alternating the path and its baseline (A B, B A, A B, …), and reported as min / median.

- no-change check: a new HTTP client per round (each check runs in a new helper process in orbit, ADR 0020), through
  ``tests/support/counting_proxy.py``; baseline: one GET of ``timestamp.json`` on a new connection, the least any
  check can cost.
- download: ``UpdateClient.download_to`` (length + every signed hash verified, fsync, rename) vs ``httpx`` streaming
  the same URL into a file; both get the same durability (``fsync`` before close, or neither with ``--no-fsync``),
  and one untimed warm-up round each before the measured rounds.

    .venv/bin/python benchmarks/update_check.py [--size-mb 100] [--rounds 3] [--no-fsync] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.support.counting_proxy import CountingProxy
from tuf_updates.http_client import TlsOptions, build_http_client
from tuf_updates.repository_client import UpdateClient
from tuf_updates.target_info import TargetInfo

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


STUB = [sys.executable, "-m", "server_stub", "serve"]


def start_stub(data: Path, repo: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    proc = subprocess.Popen(
        [*STUB, "--data-dir", str(data), "--listen", "127.0.0.1:0", "--tuf-repo", str(repo)],
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
    """Requests and body bytes (Content-Length) seen by an httpx client."""

    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes = 0

    def on_response(self, response: httpx.Response) -> None:
        self.requests += 1
        self.body_bytes += int(response.headers.get("content-length", "0") or 0)


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def alternate(rounds: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` ``rounds`` times each, in the order A B, B A, A B, … (so neither always goes first)."""
    first: list[float] = []
    second: list[float] = []
    for index in range(rounds):
        if index % 2 == 0:
            first.append(a())
            second.append(b())
        else:
            second.append(b())
            first.append(a())
    return first, second


def no_change_checks(info: dict[str, str], proxy: CountingProxy, metadata: Path, rounds: int) -> dict[str, object]:
    base = info["tuf_url"].replace(info["url"], f"https://127.0.0.1:{proxy.port}")
    context = ssl.create_default_context(cafile=info["ca_cert"])
    checks: list[dict[str, float]] = []
    baselines: list[dict[str, float]] = []

    def check() -> float:
        counter = Counter()
        http = build_http_client(TlsOptions(root_ca=Path(info["ca_cert"])), user_agent="bench", trust_env=False)
        http.event_hooks["response"] = [counter.on_response]
        proxy.reset()
        began = time.perf_counter()
        UpdateClient(metadata, base, bootstrap_root=None, http=http).refresh()
        seconds = time.perf_counter() - began
        http.close()
        time.sleep(0.2)  # the relay sees the close's alert
        wire = proxy.counts
        checks.append(
            {"seconds": seconds, "requests": counter.requests, "body_bytes": counter.body_bytes}
            | {"connections": wire.connections, "wire_up": wire.bytes_up, "wire_down": wire.bytes_down}
            | {"wire_total": wire.total}
        )
        return seconds

    def baseline() -> float:
        proxy.reset()
        began = time.perf_counter()
        with httpx.Client(verify=context, trust_env=False, headers={"User-Agent": "bench"}) as raw:
            raw.get(f"{base}/timestamp.json").raise_for_status()
        seconds = time.perf_counter() - began
        time.sleep(0.2)
        wire = proxy.counts
        baselines.append({"seconds": seconds, "connections": wire.connections, "wire_total": wire.total})
        return seconds

    alternate(rounds, check, baseline)
    median_wire = statistics.median(c["wire_total"] for c in checks)
    median_base = statistics.median(b["wire_total"] for b in baselines)
    return {
        "requests": max(c["requests"] for c in checks),
        "body_bytes": max(c["body_bytes"] for c in checks),
        "connections": max(c["connections"] for c in checks),
        "wire_bytes": summary([c["wire_total"] for c in checks]),
        "wire_up": statistics.median(c["wire_up"] for c in checks),
        "wire_down": statistics.median(c["wire_down"] for c in checks),
        "seconds": summary([c["seconds"] for c in checks]),
        "baseline_wire_bytes": summary([b["wire_total"] for b in baselines]),
        "baseline_connections": max(b["connections"] for b in baselines),
        "wire_ratio": round(median_wire / median_base, 2),
    }


def downloads(
    client: UpdateClient, target: TargetInfo, raw_url: str, ca: str, work: Path, rounds: int, durable: bool
) -> dict[str, object]:
    context = ssl.create_default_context(cafile=ca)

    def verified() -> float:
        destination = work / "verified" / "osqueryd"
        destination.unlink(missing_ok=True)
        began = time.perf_counter()
        client.download_to(target, destination, durable=durable)
        return time.perf_counter() - began

    def raw() -> float:
        destination = work / "raw"
        destination.unlink(missing_ok=True)
        began = time.perf_counter()
        with (
            httpx.Client(verify=context, trust_env=False, timeout=60) as http,
            http.stream("GET", raw_url) as response,
            destination.open("wb") as out,
        ):
            for chunk in response.iter_raw():
                out.write(chunk)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        return time.perf_counter() - began

    # one untimed round of each first: the repository's 100 MB files were just written by `orbitctl updates add`,
    # and the first download (whichever it is) pays for their write-back and for the first connection's setup
    verified()
    raw()
    verified_s, raw_s = alternate(rounds, verified, raw)
    mib = target.length / (1 << 20)
    return {
        "verified_mb_per_s": summary([mib / s for s in verified_s]),
        "raw_mb_per_s": summary([mib / s for s in raw_s]),
        "ratio_median": round(statistics.median(raw_s) / statistics.median(verified_s), 2),
        "ratio_best": round(min(raw_s) / min(verified_s), 2),
        "ratio_per_round": [round(r / v, 2) for r, v in zip(raw_s, verified_s, strict=True)],
        "durable": durable,
    }


def measure(size_mb: int, rounds: int, durable: bool) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="update-bench-"))
    proc: subprocess.Popen[bytes] | None = None
    proxy: CountingProxy | None = None
    try:
        repo = work / "repo"
        orbitctl("init", "--path", str(repo))
        big = work / "osqueryd"
        with big.open("wb") as handle:
            for _ in range(size_mb):
                handle.write(os.urandom(1 << 20))
        tiny = repo / "repository" / "1.root.json"
        common = ["--path", str(repo), "--platform", "linux", "-t", "stable"]
        versions = iter(range(1, 1000))

        def add_big() -> float:
            return orbitctl(
                "add", *common, "--target", str(big), "--name", "osqueryd", "--version", f"5.{next(versions)}.0"
            )

        def add_tiny() -> float:
            return orbitctl(
                "add", *common, "--target", str(tiny), "--name", "orbit", "--version", f"1.{next(versions)}.0"
            )

        add_big_s, add_tiny_s = alternate(rounds, add_big, add_tiny)
        proc, info = start_stub(work / "stub", repo / "repository")
        stub_port = int(info["url"].rsplit(":", 1)[1])
        proxy = CountingProxy(("127.0.0.1", stub_port))
        http = build_http_client(TlsOptions(root_ca=Path(info["ca_cert"])), user_agent="bench", trust_env=False)
        root = (repo / "repository" / "1.root.json").read_bytes()
        client = UpdateClient(work / "metadata", info["tuf_url"], bootstrap_root=root, http=http)
        client.refresh()
        target = client.lookup("osqueryd", "linux", "stable")
        assert target is not None
        raw_url = client.target_url(target)
        figures = {
            "no_change": no_change_checks(info, proxy, work / "metadata", rounds),
            "download": downloads(client, target, raw_url, info["ca_cert"], work, rounds, durable),
            "orbitctl_add_s": summary(add_big_s),
            "orbitctl_add_tiny_s": summary(add_tiny_s),
            "size_mb": size_mb,
            "rounds": rounds,
            "load_average": os.getloadavg(),
        }
        http.close()
        return figures
    finally:
        if proxy is not None:
            proxy.close()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each figure and of its baseline")
    parser.add_argument("--no-fsync", action="store_true", help="neither download path fsyncs (default: both do)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.size_mb, max(1, args.rounds), durable=not args.no_fsync)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    check = figures["no_change"]
    download = figures["download"]
    assert isinstance(check, dict) and isinstance(download, dict)
    wire, base_wire, seconds = check["wire_bytes"], check["baseline_wire_bytes"], check["seconds"]
    print(
        f"check with nothing new: {check['requests']} requests, {check['body_bytes']} B of bodies, "
        f"{check['connections']} connection(s), {wire['median']:.0f} B on the wire median (min {wire['min']:.0f}; "
        f"up {check['wire_up']:.0f}, down {check['wire_down']:.0f}), {seconds['median'] * 1000:.1f} ms"
        "   (goal: 1 connection, ≤ 4 KB)"
    )
    print(
        f"  baseline, one GET of timestamp.json on a new connection: {base_wire['median']:.0f} B "
        f"→ ratio {check['wire_ratio']}×"
    )
    v, r = download["verified_mb_per_s"], download["raw_mb_per_s"]
    print(
        f"verified download of {figures['size_mb']} MB ({'fsync' if download['durable'] else 'no fsync'}, both paths): "
        f"{v['median']:.0f} MB/s median (best {v['max']:.0f}); raw httpx stream {r['median']:.0f} MB/s "
        f"(best {r['max']:.0f}); ratio {download['ratio_median']}× median, {download['ratio_best']}× best, "
        f"per round {download['ratio_per_round']} (goal ≥ 0.8×)"
    )
    add, tiny = figures["orbitctl_add_s"], figures["orbitctl_add_tiny_s"]
    assert isinstance(add, dict) and isinstance(tiny, dict)
    print(
        f"orbitctl updates add, {figures['size_mb']} MB: {add['median']:.2f} s median (min {add['min']:.2f}); "
        f"a tiny file {tiny['median']:.2f} s → {add['median'] / tiny['median']:.2f}×"
    )
    print(f"load average during the run: {figures['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
