"""Whether anything can show the icon: appindicator also counts a StatusNotifier watcher, gtk/xorg only XEmbed."""

from __future__ import annotations

import pytest

from desktop_tray import tray_backend


@pytest.mark.parametrize(
    ("backend", "xembed", "sni", "expected"),
    [
        ("xorg", True, None, True),
        ("xorg", False, True, False),  # a StatusNotifier host cannot show an XEmbed icon
        ("gtk", None, True, None),
        ("appindicator", True, False, True),
        ("appindicator", False, True, True),
        ("appindicator", False, False, False),
        ("appindicator", None, False, False),
        ("appindicator", None, None, None),
    ],
)
def test_tray_host_present(
    monkeypatch: pytest.MonkeyPatch, backend: str, xembed: bool | None, sni: bool | None, expected: bool | None
) -> None:
    monkeypatch.setattr(tray_backend, "xembed_tray_present", lambda display_name=None: xembed)
    monkeypatch.setattr(tray_backend, "sni_watcher_present", lambda: sni)
    assert tray_backend.tray_host_present(backend) is expected
