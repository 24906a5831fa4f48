"""What may be published, and under which file name (spec/fleet-api.md §6, Fleet's layout)."""

from __future__ import annotations

PLATFORMS = ("linux", "linux-arm64", "macos", "macos-app", "windows", "windows-arm64")

FILE_NAMES: dict[tuple[str, str], str] = {
    ("orbit", "linux"): "orbit",
    ("orbit", "linux-arm64"): "orbit",
    ("orbit", "macos"): "orbit",
    ("orbit", "windows"): "orbit.exe",
    ("orbit", "windows-arm64"): "orbit.exe",
    ("osqueryd", "linux"): "osqueryd",
    ("osqueryd", "linux-arm64"): "osqueryd",
    ("osqueryd", "macos-app"): "osqueryd.app.tar.gz",
    ("osqueryd", "windows"): "osqueryd.exe",
    ("osqueryd", "windows-arm64"): "osqueryd.exe",
    ("desktop", "linux"): "desktop.tar.gz",
    ("desktop", "linux-arm64"): "desktop.tar.gz",
    ("desktop", "macos"): "desktop.app.tar.gz",
    ("desktop", "windows"): "fleet-desktop.exe",
    ("desktop", "windows-arm64"): "fleet-desktop.exe",
}
NAMES = tuple(sorted({name for name, _ in FILE_NAMES}))


class UnknownTarget(ValueError):
    pass


def file_name(name: str, platform: str) -> str:
    if name not in NAMES:
        raise UnknownTarget(f"unknown target name {name!r}: expected one of {', '.join(NAMES)}")
    if platform not in PLATFORMS:
        raise UnknownTarget(f"unknown platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
    try:
        return FILE_NAMES[(name, platform)]
    except KeyError:
        valid = ", ".join(p for n, p in FILE_NAMES if n == name)
        raise UnknownTarget(f"{name} is not published for {platform}: use one of {valid}") from None


def target_path(name: str, platform: str, channel: str) -> str:
    if not channel or "/" in channel or channel in (".", ".."):
        raise UnknownTarget(f"invalid channel {channel!r}")
    return f"{name}/{platform}/{channel}/{file_name(name, platform)}"
