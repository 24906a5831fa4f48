"""fleet-desktop's cost while idle in a real tray: resident memory, CPU time and wakeups per minute, next to a bare
pystray icon (the baseline) docked in the same tray of the same X session at the same time, with the same backend.

    .venv/bin/python benchmarks/tray_idle.py [--seconds 120] [--warmup 15] [--backend gtk|appindicator|xorg] [--json]

The X session (Xvfb, a private session bus, dunst, trayer) is ``tests/support/x_session.py``; fleet-desktop talks
to an in-process fleet-stub over TLS (a host with a Desktop token and one failing policy) and stays connected.
Wakeups are context switches summed over all of a process's threads (``/proc/<pid>/task/*/status``:
``voluntary_ctxt_switches`` = the thread slept and was woken, ``nonvoluntary_ctxt_switches`` = preempted); CPU is
``utime + stime`` from ``/proc/<pid>/stat``; RSS is ``VmRSS`` from ``/proc/<pid>/status``, sampled every second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from bench_support import forward_sigterm

from tests.support.fleet_desktop import (
    desktop_env,
    desktop_files,
    enroll_device,
    fleet_desktop_command,
    read_status,
)
from tests.support.stub_server import running_stub
from tests.support.x_session import ManagedProcess, XSession, wait_until, x_session

BACKENDS = ("gtk", "appindicator", "xorg")
GTK_BACKENDS = ("gtk", "appindicator")
XPROP = "xprop"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the baseline: a bare pystray icon ------------------------------------------------------------------------

# A pystray icon with a menu of fleet-desktop's shape and nothing else, in a bare interpreter (the backend is
# chosen at import, from PYSTRAY_BACKEND); SIGTERM stops it.
BARE_ICON = """
import signal, pystray
from PIL import Image, ImageDraw
image = Image.new("RGBA", (64, 64))
ImageDraw.Draw(image).ellipse((4, 4, 60, 60), fill=(61, 182, 123, 255))
item, menu = pystray.MenuItem, pystray.Menu
icon = pystray.Icon("bare-icon", image, "Bare icon", menu(
    item("Bare icon v1", None, enabled=False), menu.SEPARATOR,
    item("My device", lambda icon, item: None, default=True), item("Self-service", None, visible=False),
    menu.SEPARATOR, item("About", lambda icon, item: None)))
def setup(running):
    running.visible = True
    print("ready", flush=True)
signal.signal(signal.SIGTERM, lambda signum, frame: icon.stop())
icon.run(setup)
"""


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    cpu_seconds: float
    per_thread: dict[int, tuple[int, int]]  # thread id → (voluntary, involuntary) context switches so far


def _status_fields(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def counters(pid: int) -> Counters:
    # /proc/<pid>/stat: fields 14 and 15 (utime, stime) after the ")" that ends the command name; they include
    # the threads that have ended
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat.rsplit(")", 1)[1].split()
    cpu = (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS
    per_thread: dict[int, tuple[int, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = _status_fields(task / "status")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        per_thread[int(task.name)] = (
            int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]),
        )
    return Counters(cpu, per_thread)


def rss_mib(pid: int) -> float:
    return int(_status_fields(Path(f"/proc/{pid}/status"))["VmRSS"].split()[0]) / 1024


@dataclass(frozen=True)
class Figures:
    name: str
    rss_mean_mib: float
    rss_max_mib: float
    uss_mib: float  # memory unique to the process (not shared with another), at the end of the window
    cpu_ms_per_min: float
    cpu_percent: float
    wakeups_per_min: float
    voluntary_per_min: float
    involuntary_per_min: float
    threads: int
    threads_ended: int  # threads that existed at the start of the window and not at its end
    busiest_threads_per_min: list[float]  # wakeups/min of the threads that woke most, busiest first


def measure(processes: dict[str, int], seconds: float) -> list[Figures]:
    """Sample all processes over the same window."""
    start = {name: counters(pid) for name, pid in processes.items()}
    rss: dict[str, list[float]] = {name: [] for name in processes}
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for name, pid in processes.items():
            rss[name].append(rss_mib(pid))
        time.sleep(1.0)
    elapsed = time.monotonic() - began
    minutes = elapsed / 60
    results = []
    for name, pid in processes.items():
        end = counters(pid)
        cpu = end.cpu_seconds - start[name].cpu_seconds
        # switches of the threads alive at the end, since the start (or since they were born); the switches of
        # threads that ended inside the window are lost with them, which the output says
        deltas = {
            tid: (v - start[name].per_thread.get(tid, (0, 0))[0], i - start[name].per_thread.get(tid, (0, 0))[1])
            for tid, (v, i) in end.per_thread.items()
        }
        voluntary = sum(v for v, _ in deltas.values())
        involuntary = sum(i for _, i in deltas.values())
        ended = len(set(start[name].per_thread) - set(end.per_thread))
        results.append(
            Figures(
                name=name,
                rss_mean_mib=sum(rss[name]) / len(rss[name]),
                rss_max_mib=max(rss[name]),
                uss_mib=psutil.Process(pid).memory_full_info().uss / 2**20,
                cpu_ms_per_min=1000 * cpu / minutes,
                cpu_percent=100 * cpu / elapsed,
                wakeups_per_min=(voluntary + involuntary) / minutes,
                voluntary_per_min=voluntary / minutes,
                involuntary_per_min=involuntary / minutes,
                threads=len(end.per_thread),
                threads_ended=ended,
                busiest_threads_per_min=sorted(((v + i) / minutes for v, i in deltas.values()), reverse=True)[:4],
            )
        )
    return results


# --- the run --------------------------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _alive_or_fail(process: ManagedProcess) -> None:
    if not process.alive():
        raise RuntimeError(f"{process.name} exited ({process.proc.returncode}):\n{process.output()[-3000:]}")


def _wait(predicate: Callable[[], object], process: ManagedProcess, what: str, timeout: float = 60.0) -> None:
    def check() -> bool:
        _alive_or_fail(process)
        return bool(predicate())

    wait_until(check, timeout, what, interval=0.2)


@dataclass(frozen=True)
class Result:
    backend: str
    app_backend_reported: object
    seconds: float
    warmup: float
    figures: list[Figures]


def run(backend: str, seconds: float, warmup: float, workdir: Path) -> Result:
    with running_stub(workdir / "stub") as stub:
        device = enroll_device(stub)
        files = desktop_files(workdir / "desktop", device.token)
        with x_session(workdir / "x") as session:
            if backend in GTK_BACKENDS:
                _seed_gdk_visuals(session, backend)
            app = _start_app(session, stub_env=desktop_env(stub, files, backend=backend))
            _wait(
                lambda: (
                    read_status(files.status_file).get("tray") == "icon"
                    and read_status(files.status_file).get("state") == "connected"
                ),
                app,
                "fleet-desktop to show its icon, connected",
            )
            bare = session.spawn(
                "bare-icon",
                [sys.executable, "-c", BARE_ICON],
                env={"PYSTRAY_BACKEND": backend},
            )
            _wait(lambda: "ready" in bare.output(), bare, "the bare icon")
            _wait(lambda: len(session.tray_icons()) >= 2, bare, "both icons docked in trayer")
            status = read_status(files.status_file)
            _progress(f"both icons docked ({backend}); warming up {warmup:g} s, then measuring {seconds:g} s")
            time.sleep(warmup)
            figures = measure({"fleet-desktop": app.pid, "bare pystray icon": bare.pid}, seconds)
            _alive_or_fail(app)
            _alive_or_fail(bare)
    return Result(backend, status.get("backend"), seconds, warmup, figures)


def _seed_gdk_visuals(session: XSession, backend: str) -> None:
    """Let a throwaway GTK icon be the display's first GTK client, as a desktop's own panel would be.

    The first GTK 3 process on a display works out the GL visuals (loading libGL, here Mesa's llvmpipe with
    libLLVM, about 44 MiB resident that stays mapped) and caches the answer in the root window's ``GDK_VISUALS``
    property; later GTK processes read it. Without this step whichever measured process docks first pays that.
    """
    warmup = session.spawn("gtk-first-client", [sys.executable, "-c", BARE_ICON], env={"PYSTRAY_BACKEND": backend})
    _wait(
        lambda: "GDK_VISUALS(" in session.run_tool(XPROP, "-root", "GDK_VISUALS", check=False),
        warmup,
        "GTK to cache its visuals on the root window",
    )
    warmup.stop()
    wait_until(lambda: not session.tray_icons(), 30.0, "the throwaway icon to leave the tray", interval=0.1)


def _start_app(session: XSession, stub_env: dict[str, str]) -> ManagedProcess:
    return session.spawn("fleet-desktop", fleet_desktop_command(), env=stub_env)


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base > 0 else "n/a (baseline 0)"


def report(result: Result) -> str:
    figures = result.figures
    app, base = figures
    lines = [
        f"backend {result.backend} (fleet-desktop reports {result.app_backend_reported}), "
        f"idle window {result.seconds:g} s after {result.warmup:g} s of warm-up",
        "",
        f"{'process':<18} {'RSS MiB mean':>12} {'max':>6} {'USS MiB':>7} {'CPU ms/min':>10} {'CPU %':>7} "
        f"{'wakeups/min':>11} {'voluntary':>9} {'involuntary':>11} {'threads':>7}",
    ]
    for f in figures:
        lines.append(
            f"{f.name:<18} {f.rss_mean_mib:>12.1f} {f.rss_max_mib:>6.1f} {f.uss_mib:>7.1f} {f.cpu_ms_per_min:>10.1f} "
            f"{f.cpu_percent:>7.3f} {f.wakeups_per_min:>11.1f} {f.voluntary_per_min:>9.1f} "
            f"{f.involuntary_per_min:>11.1f} {f.threads:>7}"
        )
    lines.append("")
    for f in figures:
        busiest = ", ".join(f"{n:.0f}" for n in f.busiest_threads_per_min)
        ended = f", {f.threads_ended} thread(s) ended in the window (their wakeups are not counted)"
        lines.append(f"{f.name}: wakeups/min of its busiest threads: {busiest}{ended if f.threads_ended else ''}")
    lines += [
        "",
        "ratio fleet-desktop / bare pystray icon:",
        f"  RSS {_ratio(app.rss_mean_mib, base.rss_mean_mib)}   USS {_ratio(app.uss_mib, base.uss_mib)}"
        f"   CPU {_ratio(app.cpu_ms_per_min, base.cpu_ms_per_min)}"
        f"   wakeups {_ratio(app.wakeups_per_min, base.wakeups_per_min)}",
        f"  fleet-desktop's own cost: {app.rss_mean_mib - base.rss_mean_mib:+.1f} MiB, "
        f"{app.cpu_ms_per_min - base.cpu_ms_per_min:+.1f} ms CPU/min, "
        f"{app.wakeups_per_min - base.wakeups_per_min:+.1f} wakeups/min",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="measured idle window (default 120)")
    parser.add_argument("--warmup", type=float, default=15.0, help="idle time before the window (default 15)")
    parser.add_argument("--backend", choices=BACKENDS, default="gtk")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    forward_sigterm()  # SIGTERM unwinds like Ctrl-C: the X session, its processes and the stub are stopped
    with tempfile.TemporaryDirectory(prefix="tray-idle-") as tmp:
        result = run(args.backend, args.seconds, args.warmup, Path(tmp))
    print(json.dumps(asdict(result), indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
