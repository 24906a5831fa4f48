"""A horizontal bar chart as inline SVG, drawn on the server: one bar per label, its count at the end, each bar a
link. Only presentation attributes (no ``style``), so the console's CSP needs no ``unsafe-inline``; labels are
escaped like any other text (a version string comes from a host and may be anything)."""

from __future__ import annotations

from dataclasses import dataclass

from server_stub.console.markup import Markup, html, join

BAR_HEIGHT = 22
GAP = 8
LABEL_WIDTH = 170
BAR_AREA = 460
COUNT_WIDTH = 150
MAX_LABEL_CHARS = 24


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    href: str


def _percent(value: int, total: int) -> str:
    if not total:
        return ""
    share = 100 * value / total
    return f"{share:.0f} %" if share.is_integer() or 10 <= share <= 90 else f"{share:.1f} %"


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def bar_chart(title: str, bars: list[Bar], *, chart_id: str) -> Markup:
    width = LABEL_WIDTH + BAR_AREA + COUNT_WIDTH
    height = max(1, len(bars)) * (BAR_HEIGHT + GAP) + GAP
    biggest = max((b.value for b in bars), default=0)
    total = sum(b.value for b in bars)
    rows = []
    for index, bar in enumerate(bars):
        y = GAP + index * (BAR_HEIGHT + GAP)
        length = 0 if biggest == 0 else max(2, round(BAR_AREA * bar.value / biggest))
        share = _percent(bar.value, total)
        rows.append(
            html(
                '<a href="{href}"><title>{full}: {value} hosts</title>'
                '<text x="{lx}" y="{ty}" text-anchor="end" class="bar-label">{label}</text>'
                '<rect x="{bx}" y="{y}" width="{length}" height="{h}" rx="3" class="bar"></rect>'
                '<text x="{cx}" y="{ty}" class="bar-count">{value} {hosts} · {share}</text></a>',
                href=bar.href,
                full=bar.label,
                value=bar.value,
                lx=LABEL_WIDTH - 10,
                ty=y + BAR_HEIGHT - 6,
                label=_label(bar.label),
                bx=LABEL_WIDTH,
                y=y,
                length=length,
                h=BAR_HEIGHT,
                cx=LABEL_WIDTH + length + 8,
                share=share,
                hosts="host" if bar.value == 1 else "hosts",
            )
        )
    if not bars:
        rows.append(html('<text x="{x}" y="{y}" class="bar-label">no hosts</text>', x=LABEL_WIDTH, y=BAR_HEIGHT))
    return html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="chart" role="img" aria-label="{title}" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{title}</title>{rows}</svg>',
        id=chart_id,
        title=title,
        w=width,
        h=height,
        rows=join(rows),
    )


STACK_WIDTH = 700
STACK_HEIGHT = 16
STACK_CLASSES = ("seg-1", "seg-2", "seg-3", "seg-4", "seg-5")


def stacked_bar(parts: list[tuple[str, int]], *, chart_id: str) -> Markup:
    """One bar split into ``parts`` (label, count), each as wide as its share, with a legend below."""
    total = sum(max(0, n) for _, n in parts)
    x = 0.0
    rects = []
    for index, (label, count) in enumerate(parts):
        width = 0.0 if total == 0 else STACK_WIDTH * max(0, count) / total
        rects.append(
            html(
                '<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{h}" class="{css}"><title>{label}: {n}</title></rect>',
                x=x,
                w=width,
                h=STACK_HEIGHT,
                css=STACK_CLASSES[index % len(STACK_CLASSES)],
                label=label,
                n=count,
            )
        )
        x += width
    legend = join(
        html(
            '<span class="legend"><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" '
            'class="{css}"></rect></svg> {label} {n}</span>',
            css=STACK_CLASSES[index % len(STACK_CLASSES)],
            label=label,
            n=count,
        )
        for index, (label, count) in enumerate(parts)
    )
    return html(
        '<div class="stack"><svg xmlns="http://www.w3.org/2000/svg" id="{id}" class="stacked" role="img" '
        'aria-label="{summary}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" preserveAspectRatio="none">'
        '<rect x="0" y="0" width="{w}" height="{h}" class="seg-empty"></rect>{rects}</svg>'
        '<div class="legends">{legend}</div></div>',
        id=chart_id,
        summary=", ".join(f"{label} {n}" for label, n in parts),
        w=STACK_WIDTH,
        h=STACK_HEIGHT,
        rects=join(rects),
        legend=legend,
    )
