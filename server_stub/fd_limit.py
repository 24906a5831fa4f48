"""Open-file limit: every agent holds keep-alive connections (osqueryd up to two, orbit one), so the stub's file
descriptor limit, not its CPU, is what first caps the hosts it can serve (20 000 descriptors ≈ 6 600 hosts).

At start the soft limit is raised to ``WANTED``; where the hard limit is lower, raising it too is tried (it works
with root or CAP_SYS_RESOURCE, as for any server). Either way the result is logged, so an operator sees the cap.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

WANTED = 1 << 17
CONNECTIONS_PER_HOST = 3


def open_files_limit() -> int | None:
    """The soft open-files limit in force (None where there is none)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def raise_open_files_limit(wanted: int = WANTED) -> int | None:
    """Returns the soft limit now in force (None where there is no such limit, e.g. Windows)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
        except (ValueError, OSError):
            pass  # not privileged: stay within the hard limit
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft == resource.RLIM_INFINITY:
        log.info("event=open_files_limit limit=unlimited")
        return None
    log.info("event=open_files_limit limit=%d approx_hosts=%d", soft, soft // CONNECTIONS_PER_HOST)
    return int(soft)
