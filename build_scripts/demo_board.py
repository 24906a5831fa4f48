"""The demo's live status view: one row per step, a table refreshed a few times per second on a terminal, plain
time-stamped lines otherwise (CI, tests, a pipe)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text


@dataclass
class Row:
    title: str
    state: str = "waiting"  # waiting | running | ok | failed
    detail: str = ""


STYLES = {"waiting": "dim", "running": "yellow", "ok": "green", "failed": "bold red"}
MARKS = {"waiting": "·", "ok": "✔", "failed": "✘"}


@dataclass
class Board:
    """A table refreshed a few times per second on a terminal; plain lines otherwise."""

    console: Console
    rows: dict[str, Row] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    live: Live | None = None

    def add(self, key: str, title: str) -> None:
        self.rows[key] = Row(title)

    def set(self, key: str, state: str, detail: str = "", *, quiet: bool = False) -> None:
        row = self.rows[key]
        changed = row.state != state or (row.detail != detail and not quiet)
        row.state, row.detail = state, detail
        if self.live is None and changed:
            stamp = f"[{time.monotonic() - self.started:5.1f}s]"
            self.console.print(
                f"{stamp} {row.title}: {state} {detail}".rstrip(), markup=False, highlight=False, soft_wrap=True
            )

    def render(self) -> RenderableType:
        table = Table(title=f"make demo — {time.monotonic() - self.started:4.1f} s", title_justify="left")
        table.add_column("", width=2)
        table.add_column("step", no_wrap=True)
        table.add_column("detail")
        for row in self.rows.values():
            style = STYLES.get(row.state, "")
            mark: RenderableType = (
                Spinner("dots", style=style) if row.state == "running" else Text(MARKS.get(row.state, "?"), style)
            )
            table.add_row(mark, Text(row.title, style), Text(row.detail, style=style))
        return table

    @contextlib.contextmanager
    def shown(self) -> Iterator[None]:
        if not self.console.is_terminal:
            yield
            return
        with Live(console=self.console, refresh_per_second=8, get_renderable=self.render) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None
