"""HTML built by string templates in which every value is escaped unless it is already ``Markup`` (ADR 0018).

``html("<td>{name}</td>", name=host.hostname)`` escapes the hostname (``& < > " '``), so a host that calls itself
``<img src=x onerror=alert(1)>`` shows as that text. Only ``html()``, ``join()`` and ``Markup.trusted()`` make
``Markup``; the templates themselves are literals in our code, with attributes always in double quotes. This is
Jinja2's autoescaping reduced to one choke point that ``mypy --strict`` can follow: a page function returns
``Markup``, and a plain ``str`` can only get into one through the escaping path.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any, LiteralString
from urllib.parse import urlencode


class Markup(str):
    """Text that is already HTML: inserted into templates as it is."""

    __slots__ = ()

    @classmethod
    def trusted(cls, text: LiteralString) -> Markup:
        """A literal of our own code, e.g. an entity or a fixed fragment."""
        return cls(text)


def escape_value(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(escape(str(value), quote=True))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Markup) and not format_spec:
            return value
        return escape(format(value, format_spec), quote=True)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            raise ValueError("templates take no !r/!s/!a conversions: values are escaped as they are")
        return value


_FORMATTER = _EscapingFormatter()


def html(template: LiteralString, /, **values: object) -> Markup:
    """``template`` with each ``{name}`` replaced by ``values[name]``, escaped unless it is ``Markup``."""
    return Markup(_FORMATTER.vformat(template, (), values))


EMPTY = Markup("")


def join(parts: Iterable[Markup], separator: Markup = EMPTY) -> Markup:
    return Markup(separator.join(escape_value(p) for p in parts))


def query_url(path: LiteralString | str, params: Mapping[str, str]) -> str:
    """``path`` with its query string (a plain ``str``: ``html()`` escapes it when it goes into an attribute)."""
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(f"not a path of this server: {path!r}")
    return f"{path}?{urlencode(params)}" if params else path
