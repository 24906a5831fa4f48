"""The agent's side of ``helper_protocol``: ``update_runner.Repository`` answered by a helper process per check.

``with repository:`` starts the helper (``argv``: the agent's own executable with its helper subcommand, so a
frozen one-file build works the same) and opens it with the configuration; ``refresh``, ``lookup_path`` and
``download`` are requests to it; leaving the block closes it. The agent thus never imports python-tuf and its
cryptography (ADR 0020). Nothing about trust changes: the helper runs the same ``UpdateClient`` on the same
metadata directory, under the same lock.

A helper that dies, answers nonsense or nothing within ``answer_timeout`` is killed and reported as an
``UpdateError`` of kind ``helper``; like any update failure it leaves the installed binaries alone.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from tuf_updates.errors import FailureKind, UpdateError
from tuf_updates.helper_protocol import HelperConfig, ProtocolError, decode, encode, error_from_wire
from tuf_updates.target_info import TargetInfo

logger = logging.getLogger(__name__)

DEFAULT_ANSWER_TIMEOUT = 3600.0  # a safety net only: the helper's fetcher has its own read and per-file deadlines
CLOSE_TIMEOUT = 10.0
MAX_LOG_MESSAGE = 64 * 1024


class RepositoryProcess:
    """``Repository`` (see ``update_runner``) backed by ``argv``, a process speaking ``helper_protocol``."""

    def __init__(
        self,
        argv: Sequence[str],
        config: HelperConfig,
        *,
        env: Mapping[str, str] | None = None,
        answer_timeout: float = DEFAULT_ANSWER_TIMEOUT,
    ) -> None:
        self._argv = list(argv)
        self._config = config
        self._env = dict(env) if env is not None else None
        self._answer_timeout = answer_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._clock_skew: float | None = None
        self.helpers_started = 0
        self.last_helper_pid: int | None = None

    @property
    def metadata_dir(self) -> Path:
        return self._config.metadata_dir

    # -- the helper's life ---------------------------------------------------------------------------------

    def __enter__(self) -> RepositoryProcess:
        if self._process is not None:
            raise RuntimeError("the update helper is already running")
        self._clock_skew = None
        self._lines = queue.Queue()
        try:
            process = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self._env,
                close_fds=True,
            )
        except OSError as exc:
            raise UpdateError(f"cannot start the update helper: {exc}", kind=FailureKind.HELPER) from exc
        self._process = process
        self.helpers_started += 1
        self.last_helper_pid = process.pid
        assert process.stdout is not None
        self._reader = threading.Thread(
            target=_read_lines, args=(process.stdout, self._lines), name="update-helper-reader", daemon=True
        )
        self._reader.start()
        try:
            self._call("open", config=self._config.to_json(), log_level=logging.getLogger().getEffectiveLevel())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.write(encode({"op": "close"}))
                process.stdin.flush()
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("event=update_helper_kill pid=%d reason=did_not_exit", process.pid)
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(CLOSE_TIMEOUT)
            self._reader = None
        while True:  # log lines written before the close
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                with contextlib.suppress(ProtocolError):
                    self._relog(decode(line))
        if process.stdout is not None:
            process.stdout.close()

    def _fail(self, message: str) -> UpdateError:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        return UpdateError(message, kind=FailureKind.HELPER)

    # -- requests ------------------------------------------------------------------------------------------

    def _call(self, op: str, **fields: object) -> object:
        process = self._process
        if process is None or process.stdin is None:
            raise RuntimeError(f"{op} outside `with repository:`")
        try:
            process.stdin.write(encode({"op": op, **fields}))
            process.stdin.flush()
        except OSError as exc:
            raise self._fail(f"the update helper is gone ({op}): {exc}") from exc
        deadline = time.monotonic() + self._answer_timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._fail(f"the update helper did not answer {op} within {self._answer_timeout:.0f} s") from None
            if line is None:
                try:
                    status = process.wait(CLOSE_TIMEOUT)
                except subprocess.TimeoutExpired:
                    status = None
                raise self._fail(f"the update helper exited during {op} (status {status})")
            try:
                message = decode(line)
            except ProtocolError as exc:
                raise self._fail(f"the update helper answered {op} with a bad line: {exc}") from None
            if "log" in message:
                self._relog(message)
                continue
            skew = message.get("clock_skew")
            if isinstance(skew, int | float) and not isinstance(skew, bool):
                self._clock_skew = float(skew)
            if message.get("ok") is True:
                return message.get("result")
            if "error" in message:
                try:
                    raise error_from_wire(message["error"])
                except ProtocolError as exc:
                    raise self._fail(f"the update helper answered {op} with a bad error: {exc}") from None
            raise self._fail(f"the update helper refused {op}: {message.get('protocol_error', message)!r}")

    @staticmethod
    def _relog(message: dict[str, object]) -> None:
        record = message.get("log")
        if not isinstance(record, dict):
            return
        level, name, text = record.get("level"), record.get("logger"), record.get("message")
        if not isinstance(level, int) or not isinstance(name, str) or not isinstance(text, str):
            return
        logging.getLogger(name or __name__).log(level, "%s", text[:MAX_LOG_MESSAGE])

    # -- Repository ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        self._call("refresh")

    def lookup_path(self, target_path: str) -> TargetInfo | None:
        found = self._call("lookup", path=target_path)
        if found is None:
            return None
        try:
            return TargetInfo.from_json(found)
        except ValueError as exc:
            raise self._fail(f"the update helper answered lookup with a bad target: {exc}") from None

    def download(self, target: TargetInfo, staging_dir: Path) -> Path:
        path = self._call("download", target=target.to_json(), staging_dir=str(staging_dir))
        if not isinstance(path, str):
            raise self._fail("the update helper answered download without a path")
        downloaded = Path(path)
        if downloaded.parent != staging_dir or downloaded.name != target.file_name:
            raise self._fail(f"the update helper downloaded to an unexpected place: {downloaded}")
        return downloaded

    def clock_skew(self) -> float | None:
        """Local minus server time (seconds) as the helper measured it during the last check."""
        return self._clock_skew


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)
