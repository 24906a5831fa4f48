"""The GUI session on Windows: the active WTS session with a user (console or RDP), else the active console session.
The WTS calls are an injected ``WindowsSessionApi`` (ctypes on Windows, fakes in tests).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from orbit.children.gui_session import GuiSession

WTS_ACTIVE = 0  # WTS_CONNECTSTATE_CLASS.WTSActive
NO_CONSOLE_SESSION = 0xFFFFFFFF


@dataclass(frozen=True)
class WtsSession:
    session_id: int
    station: str
    state: int


@dataclass(frozen=True)
class WindowsSessionApi:
    """The WTS calls ``WindowsSessionFinder`` needs (ctypes on Windows, fakes in tests)."""

    enumerate_sessions: Callable[[], list[WtsSession]]
    active_console_session: Callable[[], int]  # WTSGetActiveConsoleSessionId (0xFFFFFFFF: none)
    session_user: Callable[[int], tuple[str, str] | None]  # (domain, user); None or empty user: nobody logged on


class WindowsSessionFinder:
    """The active WTS session with a user (the console or an RDP session), else the active console session."""

    def __init__(self, api: WindowsSessionApi | None = None) -> None:
        self._api = api

    def find(self) -> GuiSession | None:
        api = self._api or ctypes_wts_api()
        if api is None:
            return None
        candidates = [s.session_id for s in api.enumerate_sessions() if s.state == WTS_ACTIVE and s.session_id != 0]
        console = api.active_console_session()
        if console not in (NO_CONSOLE_SESSION, 0):
            candidates.append(console)
        for session_id in candidates:
            owner = api.session_user(session_id)
            if owner is not None and owner[1]:
                domain, user = owner
                return GuiSession(user, -1, -1, "", {"USERDOMAIN": domain} if domain else {}, str(session_id))
        return None


if sys.platform == "win32":  # pragma: no cover - exercised by the Windows CI runner only
    import ctypes
    from ctypes import wintypes

    class _WtsSessionInfo(ctypes.Structure):
        _fields_ = (
            ("SessionId", wintypes.DWORD),
            ("pWinStationName", wintypes.LPWSTR),
            ("State", ctypes.c_int),
        )

    _WTS_USER_NAME = 5
    _WTS_DOMAIN_NAME = 7

    def _windows_wts_api() -> WindowsSessionApi:
        wtsapi32 = ctypes.WinDLL("wtsapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.WTSGetActiveConsoleSessionId.restype = wintypes.DWORD

        def enumerate_sessions() -> list[WtsSession]:
            info = ctypes.POINTER(_WtsSessionInfo)()
            count = wintypes.DWORD()
            if not wtsapi32.WTSEnumerateSessionsW(None, 0, 1, ctypes.byref(info), ctypes.byref(count)):
                return []
            try:
                return [
                    WtsSession(int(info[i].SessionId), info[i].pWinStationName or "", int(info[i].State))
                    for i in range(count.value)
                ]
            finally:
                wtsapi32.WTSFreeMemory(info)

        def query(session_id: int, info_class: int) -> str:
            buffer = wintypes.LPWSTR()
            size = wintypes.DWORD()
            if not wtsapi32.WTSQuerySessionInformationW(
                None, session_id, info_class, ctypes.byref(buffer), ctypes.byref(size)
            ):
                return ""
            try:
                return buffer.value or ""
            finally:
                wtsapi32.WTSFreeMemory(buffer)

        def session_user(session_id: int) -> tuple[str, str] | None:
            user = query(session_id, _WTS_USER_NAME)
            return (query(session_id, _WTS_DOMAIN_NAME), user) if user else None

        return WindowsSessionApi(
            enumerate_sessions=enumerate_sessions,
            active_console_session=lambda: int(kernel32.WTSGetActiveConsoleSessionId()),
            session_user=session_user,
        )

    def ctypes_wts_api() -> WindowsSessionApi | None:
        """The real WTS calls."""
        return _windows_wts_api()

else:

    def ctypes_wts_api() -> WindowsSessionApi | None:
        """The real WTS calls; None outside Windows."""
        return None
