"""What a host gets from ``distributed/read``: a pure decision from what is due.

Every query gets a discovery entry (``SELECT 1`` when it has none), as Fleet does; names and SQL are never empty
(one empty value makes osqueryd reject the whole batch). ``accelerate`` asks the host to poll every 5 s for a
while: sent while its hostname or platform are still unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from server_stub.host_details import DETAIL_QUERIES
from server_stub.live_queries import PendingQuery
from server_stub.policies import Policy, query_name

ACCELERATE_SECONDS = 10


@dataclass(frozen=True)
class DistributedPlan:
    queries: dict[str, str] = field(default_factory=dict)
    discovery: dict[str, str] = field(default_factory=dict)
    accelerate: int | None = None

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"queries": self.queries, "discovery": self.discovery}
        if self.accelerate:
            body["accelerate"] = self.accelerate
        return body


def details_due(detail_updated_at: float | None, now: float, interval: float) -> bool:
    return detail_updated_at is None or now - detail_updated_at >= interval


def policies_due(policy_updated_at: float | None, newest_policy_change: float, now: float, interval: float) -> bool:
    if policy_updated_at is None:
        return True
    return newest_policy_change > policy_updated_at or now - policy_updated_at >= interval


def plan(
    *,
    live: Sequence[PendingQuery],
    send_details: bool,
    policies: Sequence[Policy],
    details_known: bool,
) -> DistributedPlan:
    queries: dict[str, str] = {}
    discovery: dict[str, str] = {}
    for pending in live:
        if pending.sql.strip():
            queries[pending.name] = pending.sql
            discovery[pending.name] = "SELECT 1"
    if send_details:
        for detail in DETAIL_QUERIES:
            queries[detail.query_name] = detail.sql
            discovery[detail.query_name] = detail.discovery
    for policy in policies:
        if policy.query.strip():
            queries[query_name(policy.id)] = policy.query
            discovery[query_name(policy.id)] = "SELECT 1"
    return DistributedPlan(queries, discovery, None if details_known else ACCELERATE_SECONDS)
