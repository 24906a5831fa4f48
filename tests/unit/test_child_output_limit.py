"""A child's output reaching orbit's log is capped per window, and what was dropped is said."""

from __future__ import annotations

from orbit.children.output_limit import OutputCap, OutputLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_capped_per_window_and_the_drop_is_reported_once_the_window_ends() -> None:
    logged: list[str] = []
    clock = Clock()
    limiter = OutputLimiter(
        "osqueryd", logged.append, OutputCap(max_lines=5, max_bytes=10_000, window_s=10), clock=clock
    )
    for index in range(1000):  # a verbose osqueryd: 1000 lines in one window
        limiter(f"line {index}")
    assert logged == [f"line {i}" for i in range(5)]
    clock.now = 10.0
    limiter("next window")
    assert logged[5].startswith("[orbit] osqueryd: 995 lines") and "dropped" in logged[5]
    assert logged[6] == "next window"
    assert limiter.total_dropped_lines == 995


def test_the_byte_cap_holds_for_long_lines_and_the_end_of_output_reports_the_last_window() -> None:
    logged: list[str] = []
    limiter = OutputLimiter("fleet-desktop", logged.append, OutputCap(max_lines=100, max_bytes=100), clock=Clock())
    limiter("x" * 60)
    limiter("y" * 60)  # 120 bytes > 100: dropped
    limiter("z" * 30)  # fits: 90 bytes
    limiter.close()
    assert logged[:2] == ["x" * 60, "z" * 30]
    assert "1 lines (60 bytes)" in logged[2]


def test_quiet_output_passes_untouched() -> None:
    logged: list[str] = []
    clock = Clock()
    limiter = OutputLimiter("osqueryd", logged.append, OutputCap(max_lines=3, window_s=1), clock=clock)
    for index in range(10):
        clock.now = float(index)
        limiter(f"line {index}")
    limiter.close()
    assert logged == [f"line {i}" for i in range(10)]
