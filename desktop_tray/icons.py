"""Tray icons drawn with Pillow: Fleet's six-dot mark plus a status dot (no image files to ship).

``IconTheme.DARK`` is for dark panels (a light mark, Fleet's default on Linux), ``IconTheme.LIGHT`` for light
panels. The status dot's colour: amber while connecting, green when connected, red when policies fail, grey when
offline.
"""

from __future__ import annotations

import enum
import functools

from PIL import Image, ImageDraw

from desktop_tray.menu_state import IconStatus

ICON_SIZE = 64

Colour = tuple[int, int, int]

STATUS_COLOURS: dict[IconStatus, Colour] = {
    IconStatus.CONNECTING: (245, 166, 35),
    IconStatus.CONNECTED: (61, 182, 123),
    IconStatus.FAILING: (207, 34, 46),
    IconStatus.OFFLINE: (139, 143, 162),
}


class IconTheme(enum.Enum):
    DARK = "dark"
    LIGHT = "light"


MARK_COLOURS: dict[IconTheme, Colour] = {IconTheme.DARK: (255, 255, 255), IconTheme.LIGHT: (25, 33, 71)}

# the mark: three dots, two, one (an inverted triangle), in a 64 × 64 grid
_DOTS = ((12, 10), (30, 10), (48, 10), (21, 26), (39, 26), (30, 42))
_DOT_RADIUS = 7
STATUS_DOT_CENTRE = (51, 51)
_STATUS_RADIUS = 11


def status_dot_centre(size: int = ICON_SIZE) -> tuple[int, int]:
    scale = size / ICON_SIZE
    return (round(STATUS_DOT_CENTRE[0] * scale), round(STATUS_DOT_CENTRE[1] * scale))


@functools.lru_cache(maxsize=32)
def draw_icon(status: IconStatus, theme: IconTheme = IconTheme.DARK, size: int = ICON_SIZE) -> Image.Image:
    """An RGBA image; cached, so callers must not draw on it."""
    scale = size / ICON_SIZE
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    mark = MARK_COLOURS[theme]
    for x, y in _DOTS:
        r = _DOT_RADIUS * scale
        draw.ellipse((x * scale - r, y * scale - r, x * scale + r, y * scale + r), fill=(*mark, 255))
    cx, cy = STATUS_DOT_CENTRE[0] * scale, STATUS_DOT_CENTRE[1] * scale
    outer = (_STATUS_RADIUS + 2) * scale
    ring = (25, 33, 71) if theme is IconTheme.DARK else (255, 255, 255)
    draw.ellipse((cx - outer, cy - outer, cx + outer, cy + outer), fill=(*ring, 255))
    inner = _STATUS_RADIUS * scale
    draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=(*STATUS_COLOURS[status], 255))
    return image
