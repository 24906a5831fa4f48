"""fleet-stub fuzzed over every endpoint family (issue 15): a real ``fleet-stub serve`` process over TLS fed hostile
requests drawn by hypothesis.

Families: the osquery TLS API (enroll, config, distributed/read, distributed/write, log, carve/begin, carve/block),
the orbit API (ping, enroll, config, device_token, scripts/request, scripts/result, update_outcomes,
osqueryd_restart/result), the device API and the My-device pages, and the admin REST API with the admin token (hosts,
live queries, logs, teams, agent options, secrets, policies, scripts, carves, rollouts, osqueryd restarts, /metrics).

Bodies are JSON trees whose known fields usually hold the right kind of value (a valid node key, a real execution id)
so the handlers' logic runs, and otherwise anything: lone surrogate escapes, invalid UTF-8 bytes, NaN and Infinity,
integers beyond int64 and beyond 4300 digits, 1e400, wrong types, non-objects; sometimes gzip-encoded. Ids in paths are
ASCII numbers of any size, Unicode digits or arbitrary percent-encoded text.

Properties, per request: never a 5xx, the family's error shape on every error, never ``error`` in an osquery 2xx,
every JSON answer strict (RFC 8259). For the whole run: no traceback and no ERROR line in the stub's log or stderr,
and memory that does not grow (the RSS of the stub process, see ``test_the_stub_stayed_healthy``).

Bounded: ``FLEET_STUB_FUZZ_EXAMPLES`` examples per test (default 200, three times that for the admin API's 36
routes; raise it for a deeper run), no deadline, derandomized (the same examples every run, no example database):
about 4,000 requests, 10-20 s in ``make test``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import ssl
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from tests.support.rollout_hosts import publish_repository
from tests.support.stub_process import StubProcess

pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("FLEET_STUB_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example),
)
SECRET = "fuzz-secret-0123"
OSQ = "/api/v1/osquery"
ADMIN = "/api/latest/fleet"
# RSS growth allowed across the whole run (SQLite's page cache and WAL index, the allocator's arenas, TLS sessions)
RSS_GROWTH_LIMIT = 48 * 1024 * 1024
# ... and across repeated rounds of the same hostile corpus once warm: a leak per request would show here
RSS_REPEAT_GROWTH_LIMIT = 8 * 1024 * 1024
REPEAT_ROUNDS = 60  # each round sends ~0.3 MiB: a server keeping any part of each request would pass the limit

# --- values on the wire ---------------------------------------------------------------------------------------
# json.dumps with ensure_ascii writes lone surrogates as \udXXX escapes and NaN/Infinity as bare tokens; markers
# (private-use characters) stand for what json.dumps cannot write and are swapped for raw bytes afterwards.
INVALID_UTF8 = "\ue000"  # raw bytes that are not UTF-8
HUGE_INT = "\ue001"  # an integer literal of 5000 digits (beyond int()'s 4300)
HUGE_FLOAT = "\ue002"  # 1e400: valid JSON, beyond a double
_MARKERS = (
    (b'"\\ue001"', b"9" * 5000),
    (b'"\\ue002"', b"1e400"),
    (b"\\ue000", b"\xff\xed\xa0\x80\xc3"),
)


def wire(value: object, world: World) -> bytes:
    raw = json.dumps(world.fill(value), ensure_ascii=True)
    encoded = raw.encode("ascii")
    for marker, replacement in _MARKERS:
        encoded = encoded.replace(marker, replacement)
    return encoded


SPECIAL_TEXT = (
    "\ud800",
    "\udfff",
    "a\ud800b",
    "\udbff\udbff",
    INVALID_UTF8,
    "x" + INVALID_UTF8 + "y",
    "\u00b2",
    "\u0663",
    "\uff11",
    "9" * 25,
    "-1",
    "",
    " ",
    "\x00",
    "NaN",
    "\u2028",
    "../../etc/passwd",
    "%00",
    "x" * 3000,
    "result",
    "status",
)
TEXT: SearchStrategy[str] = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.text(st.characters(exclude_categories=()), max_size=24),  # any code point, surrogates included
)
INTS: SearchStrategy[int] = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**30)]),
)
SCALARS: SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(),  # NaN and ±Infinity included
    TEXT,
    st.sampled_from([HUGE_INT, HUGE_FLOAT]),
)
VALUES: SearchStrategy[object] = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)


_ABSENT = object()


def _same(value: object) -> object:
    return value


def weighted(common: SearchStrategy[object], rare: SearchStrategy[object], odds: int) -> SearchStrategy[object]:
    """``common`` ``odds`` times as often as ``rare`` (one_of drops repeats of the same strategy: copies are mapped)."""
    return st.one_of(*(common.map(_same) for _ in range(odds)), rare)


def usually(good: SearchStrategy[object]) -> SearchStrategy[object]:
    """Mostly (4 in 5) the right kind of value, so the handler's logic past its checks runs; otherwise anything."""
    return weighted(good, VALUES, 4)


def credential(placeholder: str) -> SearchStrategy[object]:
    """The world's real credential (9 in 10): most examples should get past authentication."""
    return weighted(st.just(placeholder), VALUES, 9)


def body(**fields: SearchStrategy[object]) -> SearchStrategy[object]:
    """A JSON object holding each of ``fields`` 9 times in 10, plus unknown keys; 1 time in 5 not an object at all."""

    def build(known: dict[str, object], extra: dict[str, object]) -> dict[str, object]:
        return {**extra, **{k: v for k, v in known.items() if v is not _ABSENT}}

    present = {name: weighted(value, st.just(_ABSENT), 9) for name, value in fields.items()}
    obj = st.builds(build, st.fixed_dictionaries(present), st.dictionaries(TEXT, VALUES, max_size=2))
    return weighted(obj, VALUES, 4)


def digits_of(strategy: SearchStrategy[int]) -> SearchStrategy[object]:
    return strategy.map(str)


NODE_KEY = credential("<node_key>")
ORBIT_KEY = credential("<orbit_key>")
# ids as text: small ones (some exist), the edges of int64, far beyond, other digits
NUMBER_TEXT: SearchStrategy[str] = st.one_of(
    st.integers(min_value=0, max_value=50).map(str),
    st.sampled_from([str(2**63 - 1), str(2**63), "9" * 30, "9" * 5000, "007", "\u00b2", "\u0663", "\uff11"]),
    st.integers(min_value=0).map(str),
)
ROW: SearchStrategy[object] = st.dictionaries(TEXT, usually(TEXT), max_size=4)
QUERY_NAME: SearchStrategy[str] = st.one_of(
    st.sampled_from(
        [
            "fleet_detail_query_system_info",
            "fleet_detail_query_os_version",
            "fleet_detail_query_osquery_info",
            "fleet_detail_query_orbit_info",
        ]
    ),
    st.builds(
        lambda prefix, suffix: prefix + suffix,
        st.sampled_from(["fleet_policy_query_", "fleet_distributed_query_"]),
        st.one_of(NUMBER_TEXT, TEXT),
    ),
    TEXT,
)


@dataclass
class World:
    """What the fixture enrolled: the real credentials the placeholders in drawn bodies and paths stand for."""

    client: httpx.Client
    admin: httpx.Client
    node_key: str
    orbit_key: str
    device_orbit_key: str
    token: str
    execution_id: str
    session_id: str
    request_id: str
    host_id: int
    team_id: int
    policy_id: int
    baseline_rss: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def fill(self, value: object) -> object:
        if isinstance(value, str):
            return {
                "<node_key>": self.node_key,
                "<orbit_key>": self.orbit_key,
                "<device_orbit_key>": self.device_orbit_key,
                "<token>": self.token,
                "<execution_id>": self.execution_id,
                "<session_id>": self.session_id,
                "<request_id>": self.request_id,
            }.get(value, value)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def segment(self, value: object) -> str:
        """A path segment: a placeholder id, a number, or any text, percent-encoded (surrogates as their bytes)."""
        text = {
            "<host_id>": str(self.host_id),
            "<team_id>": str(self.team_id),
            "<policy_id>": str(self.policy_id),
        }.get(str(value), str(self.fill(value)))
        text = text.replace(HUGE_INT, "9" * 5000).replace(HUGE_FLOAT, "1e400")
        raw = b"\xff\xfe".join(part.encode("utf-8", "surrogatepass") for part in text.split(INVALID_UTF8))
        return urllib.parse.quote(raw, safe="")

    def send(
        self,
        method: str,
        path: str,
        payload: object | None = None,
        *,
        compress: bool = False,
        client: httpx.Client | None = None,
        extra: dict[str, bytes] | None = None,
    ) -> httpx.Response:
        headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
        content = None
        if payload is not None:
            content = wire(payload, self)
            if compress:
                content = gzip.compress(content)
                headers["Content-Encoding"] = "gzip"
        response = (client or self.client).request(method, path, content=content, headers={**headers, **(extra or {})})
        self.requests += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        check_answer(method, path, response)
        return response


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def check_answer(method: str, path: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (method, path[:200], response.status_code, response.text[:500])
    if method == "HEAD" or not response.headers.get("content-type", "").startswith("application/json"):
        return
    answer = strict_loads(response.text)
    osquery = path.startswith(("/api/osquery/", "/api/v1/osquery/"))
    if response.status_code >= 400:
        assert isinstance(answer, dict), answer
        if osquery:
            assert isinstance(answer.get("error"), str) and answer["error"], answer
            assert answer.get("node_invalid", True) is True, answer
        else:
            assert isinstance(answer.get("message"), str), answer
            assert isinstance(answer.get("errors"), list) and answer["errors"][0]["name"] == "base", answer
    elif osquery:
        assert not (isinstance(answer, dict) and "error" in answer), answer


# --- the stub process and its world ----------------------------------------------------------------------------


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


@pytest.fixture(scope="module")
def fuzz_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StubProcess, World]]:
    root = tmp_path_factory.mktemp("fuzz")
    repo = publish_repository(root / "tuf")  # rollouts can be created: their engine runs under the fuzz too
    stub = StubProcess(
        root / "data",
        f"--enroll-secret={SECRET}",
        "--live-query-timeout=0.2",
        "--tuf-repo",
        str(repo),
        output_dir=root / "output",
    )
    try:
        info = stub.wait_ready()
        verify = ssl.create_default_context(cafile=str(info["ca_cert"]))
        base = str(info["url"])
        client = httpx.Client(base_url=base, verify=verify, trust_env=False, timeout=30.0)
        admin = httpx.Client(
            base_url=base,
            verify=verify,
            trust_env=False,
            timeout=30.0,
            headers={"Authorization": f"Bearer {info['admin_token']}"},
        )
        with client, admin:
            world = make_world(client, admin)
            world.baseline_rss = rss(stub.proc.pid)
            yield stub, world
    finally:
        if stub.proc.poll() is None:
            stub.stop()


def make_world(client: httpx.Client, admin: httpx.Client) -> World:
    hardware_uuid = str(uuid.uuid4())
    orbit_key = client.post(
        "/api/fleet/orbit/enroll", json={"enroll_secret": SECRET, "hardware_uuid": hardware_uuid, "platform": "ubuntu"}
    ).json()["orbit_node_key"]
    node_key = client.post(
        f"{OSQ}/enroll",
        json={
            "enroll_secret": SECRET,
            "host_identifier": hardware_uuid,
            "host_details": {"os_version": {"platform": "ubuntu"}, "system_info": {"hostname": "fuzz"}},
        },
    ).json()["node_key"]
    token = uuid.uuid4().hex
    assert (
        client.post(
            "/api/fleet/orbit/device_token", json={"orbit_node_key": orbit_key, "device_auth_token": token}
        ).status_code
        == 200
    )
    device_orbit_key = client.post(
        "/api/fleet/orbit/enroll", json={"enroll_secret": SECRET, "hardware_uuid": str(uuid.uuid4())}
    ).json()["orbit_node_key"]
    host_id = next(h["id"] for h in admin.get(f"{ADMIN}/hosts").json()["hosts"] if h["uuid"] == hardware_uuid)
    team_id = admin.post(f"{ADMIN}/teams", json={"name": "fuzzers"}).json()["team"]["id"]
    policy_id = admin.post(f"{ADMIN}/global/policies", json={"name": "p", "query": "SELECT 1"}).json()["policy"]["id"]
    execution_id = admin.post(f"{ADMIN}/scripts/run", json={"host_id": host_id, "script_contents": "echo"}).json()[
        "execution_id"
    ]
    request_id = "fleet_distributed_query_1"
    session_id = client.post(
        f"{OSQ}/carve/begin",
        json={
            "node_key": node_key,
            "block_count": 3,
            "block_size": 4,
            "carve_size": 10,
            "carve_id": str(uuid.uuid4()),
            "request_id": request_id,
        },
    ).json()["session_id"]
    return World(
        client,
        admin,
        node_key,
        orbit_key,
        device_orbit_key,
        token,
        execution_id,
        session_id,
        request_id,
        host_id,
        team_id,
        policy_id,
    )


# --- osquery TLS API ------------------------------------------------------------------------------------------

HOST_DETAILS = st.dictionaries(
    st.one_of(st.sampled_from(["system_info", "os_version", "osquery_info", "platform_info"]), TEXT),
    usually(ROW),
    max_size=4,
)


@FUZZ
@given(
    payload=body(
        enroll_secret=usually(st.just(SECRET)),
        host_identifier=TEXT,
        platform_type=VALUES,
        host_details=usually(HOST_DETAILS),
    ),
    prefix=st.sampled_from(["/api/osquery", "/api/v1/osquery"]),
)
def test_osquery_enroll(fuzz_stub: tuple[StubProcess, World], payload: object, prefix: str) -> None:
    fuzz_stub[1].send("POST", f"{prefix}/enroll", payload)


@FUZZ
@given(
    path=st.sampled_from(["config", "distributed/read"]),
    payload=st.one_of(body(node_key=NODE_KEY), st.none()),
)
def test_osquery_config_and_distributed_read(fuzz_stub: tuple[StubProcess, World], path: str, payload: object) -> None:
    fuzz_stub[1].send("POST", f"{OSQ}/{path}", payload)


@FUZZ
@given(
    payload=body(
        node_key=NODE_KEY,
        queries=usually(st.dictionaries(QUERY_NAME, usually(st.lists(ROW, max_size=3)), max_size=4)),
        statuses=usually(st.dictionaries(QUERY_NAME, usually(st.one_of(INTS, digits_of(INTS), TEXT)), max_size=4)),
        messages=usually(st.dictionaries(QUERY_NAME, TEXT, max_size=3)),
        stats=VALUES,
    )
)
def test_osquery_distributed_write(fuzz_stub: tuple[StubProcess, World], payload: object) -> None:
    fuzz_stub[1].send("POST", f"{OSQ}/distributed/write", payload)


LOG_LINE = st.fixed_dictionaries(
    {},
    optional={
        "name": TEXT,
        "hostIdentifier": TEXT,
        "unixTime": INTS,
        "severity": SCALARS,
        "columns": usually(ROW),
        "snapshot": st.lists(ROW, max_size=2),
        "decorations": VALUES,
        "counter": SCALARS,
        "numerics": SCALARS,
        "message": TEXT,
    },
)


@FUZZ
@given(
    payload=body(
        node_key=NODE_KEY,
        log_type=usually(st.sampled_from(["result", "status"])),
        data=usually(st.lists(usually(LOG_LINE), max_size=6)),
    ),
    compress=st.booleans(),
)
def test_osquery_log(fuzz_stub: tuple[StubProcess, World], payload: object, compress: bool) -> None:
    fuzz_stub[1].send("POST", f"{OSQ}/log", payload, compress=compress)


SIZES = usually(st.integers(min_value=-2, max_value=64))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# a carve whose sizes agree (Fleet's rule), so sessions open and the other fields' handling is reached
CONSISTENT_CARVE = st.tuples(st.integers(1, 8), st.integers(1, 64)).flatmap(
    lambda shape: st.fixed_dictionaries(
        {
            "node_key": NODE_KEY,
            "block_count": st.just(shape[0]),
            "block_size": st.just(shape[1]),
            "carve_size": st.integers((shape[0] - 1) * shape[1] + 1, shape[0] * shape[1]),
            "carve_id": TEXT,
            "request_id": TEXT,
        }
    )
)


@FUZZ
@given(
    begin=weighted(
        CONSISTENT_CARVE,
        body(
            node_key=NODE_KEY,
            block_count=usually(st.one_of(SIZES, INTS)),
            block_size=usually(st.one_of(SIZES, INTS)),
            carve_size=usually(st.one_of(SIZES, INTS)),
            carve_id=TEXT,
            request_id=TEXT,
        ),
        1,
    ),
    block=body(
        session_id=credential("<session_id>"),
        request_id=credential("<request_id>"),
        block_id=usually(st.one_of(st.integers(min_value=-1, max_value=3), INTS)),
        # blocks of the world's carve are 4, 4 and 2 bytes
        data=usually(st.one_of(st.sampled_from([b"abcd", b"ef"]), st.binary(max_size=6)).map(_base64)),
    ),
)
def test_osquery_carves(fuzz_stub: tuple[StubProcess, World], begin: object, block: object) -> None:
    fuzz_stub[1].send("POST", f"{OSQ}/carve/begin", begin)
    fuzz_stub[1].send("POST", f"{OSQ}/carve/block", block)


# --- orbit API ------------------------------------------------------------------------------------------------


@FUZZ
@given(
    payload=body(
        enroll_secret=usually(st.just(SECRET)),
        hardware_uuid=TEXT,
        osquery_identifier=TEXT,
        hardware_serial=TEXT,
        hostname=TEXT,
        computer_name=TEXT,
        platform=TEXT,
        platform_like=TEXT,
        hardware_model=TEXT,
    ),
    ping=st.sampled_from(["HEAD", "GET"]),
)
def test_orbit_enroll_and_ping(fuzz_stub: tuple[StubProcess, World], payload: object, ping: str) -> None:
    world = fuzz_stub[1]
    world.send("POST", "/api/fleet/orbit/enroll", payload)
    world.send(ping, "/api/fleet/orbit/ping")


@FUZZ
@given(
    config=body(orbit_node_key=ORBIT_KEY),
    token=body(
        orbit_node_key=credential("<device_orbit_key>"),
        device_auth_token=usually(st.one_of(st.uuids().map(str), st.text("abc-_.~", min_size=1, max_size=600))),
    ),
)
def test_orbit_config_and_device_token(fuzz_stub: tuple[StubProcess, World], config: object, token: object) -> None:
    world = fuzz_stub[1]
    world.send("POST", "/api/fleet/orbit/config", config)
    world.send("POST", "/api/fleet/orbit/device_token", token)


@FUZZ
@given(
    request=body(orbit_node_key=ORBIT_KEY, execution_id=credential("<execution_id>")),
    result=body(
        orbit_node_key=ORBIT_KEY,
        execution_id=credential("<execution_id>"),
        output=usually(TEXT),
        runtime=usually(st.one_of(st.integers(min_value=0, max_value=10), INTS)),
        exit_code=usually(INTS),
    ),
)
def test_orbit_scripts(fuzz_stub: tuple[StubProcess, World], request: object, result: object) -> None:
    world = fuzz_stub[1]
    world.send("POST", "/api/fleet/orbit/scripts/request", request)
    world.send("POST", "/api/fleet/orbit/scripts/result", result)


OUTCOME = st.fixed_dictionaries(
    {
        "id": usually(st.one_of(st.uuids().map(str), TEXT)),
        "target": usually(st.sampled_from(["orbit", "osqueryd", "desktop"])),
        "version": usually(st.sampled_from(["1.4.0", "1.3.0", "5.11.0"])),
        "previous_version": usually(st.one_of(st.none(), st.sampled_from(["1.3.0", "5.12.0"]))),
        "channel": usually(st.sampled_from(["1.4.0", "stable"])),
        "outcome": usually(st.sampled_from(["confirmed", "rolled_back", "crash_loop", "install_failed", "repaired"])),
        "reason": usually(st.one_of(st.none(), TEXT)),
        "at": usually(st.sampled_from(["2026-12-05T10:00:00Z", "2026-12-05T11:00:00.5+01:00", "2026-12-05"])),
    }
)


@FUZZ
@given(
    outcomes=body(orbit_node_key=ORBIT_KEY, outcomes=usually(st.lists(usually(OUTCOME), max_size=5))),
    ack=body(
        orbit_node_key=ORBIT_KEY,
        request_id=usually(st.one_of(st.uuids().map(str), TEXT)),
        error=usually(st.one_of(st.none(), TEXT)),
    ),
)
def test_orbit_update_outcomes_and_restart_results(
    fuzz_stub: tuple[StubProcess, World], outcomes: object, ack: object
) -> None:
    world = fuzz_stub[1]
    world.send("POST", "/api/fleet/orbit/update_outcomes", outcomes)
    world.send("POST", "/api/fleet/orbit/osqueryd_restart/result", ack)


# --- device API and My-device pages -----------------------------------------------------------------------------

DEVICE_ROUTES = (
    ("GET", ""),
    ("HEAD", "/ping"),
    ("GET", "/ping"),
    ("GET", "/desktop"),
    ("GET", "/policies"),
    ("GET", "/transparency"),
    ("POST", "/refetch"),
    ("POST", "/debug/errors"),
)


@FUZZ
@given(
    route=st.sampled_from(DEVICE_ROUTES),
    version=usually(st.sampled_from(["v1", "2022-04", "latest"])),
    token=credential("<token>"),
    payload=body(error_source=TEXT, error_source_version=TEXT, error_timestamp=VALUES, error_message=VALUES),
    page=st.sampled_from(["", "/policies", "/self-service"]),
)
def test_device_api_and_pages(
    fuzz_stub: tuple[StubProcess, World],
    route: tuple[str, str],
    version: object,
    token: object,
    payload: object,
    page: str,
) -> None:
    world = fuzz_stub[1]
    method, suffix = route
    path = f"/api/{world.segment(version)}/fleet/device/{world.segment(token)}{suffix}"
    world.send(method, path, payload if method == "POST" else None)
    world.send("GET", f"/device/{world.segment(token)}{page}")


# --- admin REST API -------------------------------------------------------------------------------------------

ID = st.one_of(
    st.sampled_from(["<host_id>", "<team_id>", "<policy_id>"]),
    NUMBER_TEXT,
    st.sampled_from(["-1", "1.0", "0x1", HUGE_INT]),
    TEXT,
)
# deleting ids: never the world's own host or team (the other tests need them), anything else goes
FOREIGN_ID = st.one_of(
    st.integers(min_value=10**6, max_value=2**70).map(str),
    st.sampled_from(["\u00b2", "-1"]),
    TEXT.filter(lambda text: not (text.isascii() and text.isdigit())),
)
AGENT_OPTIONS = usually(
    st.fixed_dictionaries(
        {},
        optional={
            "config": usually(st.fixed_dictionaries({}, optional={"options": usually(st.dictionaries(TEXT, SCALARS))})),
            "overrides": VALUES,
            "command_line_flags": usually(st.dictionaries(TEXT, SCALARS, max_size=3)),
            "update_channels": usually(st.dictionaries(st.sampled_from(["orbit", "osqueryd", "desktop"]), TEXT)),
            "script_execution_timeout": usually(INTS),
        },
    )
)
NOTIFICATIONS = usually(st.dictionaries(TEXT, st.one_of(st.booleans(), TEXT), max_size=3))
POLICY = body(name=usually(TEXT), query=usually(TEXT), description=TEXT, resolution=TEXT, platform=usually(TEXT))
SECRETS = usually(st.lists(usually(st.fixed_dictionaries({"secret": usually(TEXT)})), max_size=3))
PERCENT = usually(st.one_of(st.integers(min_value=0, max_value=100), st.floats()))
ROLLOUT = body(
    target=usually(st.sampled_from(["orbit", "osqueryd", "desktop"])),
    version=usually(st.sampled_from(["1.4.0", "1.3.0", "5.11.0", "9.9.9"])),
    from_version=usually(st.one_of(st.none(), st.sampled_from(["1.3.0", "1.2.0", "5.12.0"]))),
    team_ids=usually(st.one_of(st.none(), st.lists(INTS, max_size=3))),
    waves=usually(st.lists(PERCENT, max_size=5).map(lambda w: [*w, 100])),
    soak_seconds=usually(st.one_of(st.integers(min_value=0, max_value=5), INTS)),
    halt_rules=usually(
        st.fixed_dictionaries({}, optional={"max_failed_percent": PERCENT, "min_healthy_percent": PERCENT})
    ),
    name=usually(TEXT),
)

ADMIN_ROUTES: tuple[tuple[str, str, SearchStrategy[object] | None], ...] = (
    ("GET", "/hosts", None),
    ("GET", "/hosts/{id}", None),
    ("DELETE", "/hosts/{foreign}", None),
    ("POST", "/hosts/{id}/query", body(query=usually(TEXT))),
    ("GET", "/hosts/{id}/logs/{text}", None),
    ("GET", "/teams", None),
    ("POST", "/teams", body(name=usually(TEXT))),
    ("GET", "/teams/{id}", None),
    ("PATCH", "/teams/{id}", body(agent_options=AGENT_OPTIONS, orbit_notifications=NOTIFICATIONS)),
    ("DELETE", "/teams/{foreign}", None),
    ("POST", "/teams/{id}/agent_options", AGENT_OPTIONS),
    ("GET", "/teams/{id}/secrets", None),
    ("PATCH", "/teams/{id}/secrets", body(secrets=SECRETS)),
    ("GET", "/teams/{id}/policies", None),
    ("POST", "/teams/{id}/policies", POLICY),
    ("PATCH", "/teams/{id}/policies/{id}", POLICY),
    ("GET", "/spec/enroll_secret", None),
    ("POST", "/spec/enroll_secret", body(spec=usually(st.fixed_dictionaries({"secrets": SECRETS})))),
    ("GET", "/config", None),
    ("PATCH", "/config", body(agent_options=AGENT_OPTIONS, orbit_notifications=NOTIFICATIONS)),
    ("GET", "/global/policies", None),
    ("POST", "/global/policies", POLICY),
    ("PATCH", "/global/policies/{id}", POLICY),
    ("POST", "/global/policies/delete", body(ids=usually(st.lists(st.one_of(FOREIGN_ID.map(str), INTS), max_size=3)))),
    (
        "POST",
        "/scripts/run",
        body(host_id=usually(st.one_of(st.just(0), INTS)), script_contents=usually(TEXT), timeout=usually(INTS)),
    ),
    ("GET", "/scripts/results/{text}", None),
    ("GET", "/carves", None),
    ("GET", "/rollouts", None),
    ("POST", "/rollouts", ROLLOUT),
    ("GET", "/rollouts/{id}", None),
    ("POST", "/rollouts/{id}/pause", None),
    ("POST", "/rollouts/{id}/resume", None),
    ("POST", "/rollouts/{id}/abort", None),
    ("POST", "/hosts/{id}/restart_osqueryd", None),
    ("POST", "/teams/{id}/restart_osqueryd", None),
    ("GET", "/osqueryd_restarts/{text}", None),
)


@settings(FUZZ, max_examples=3 * EXAMPLES)  # one route of 36 per example
@given(data=st.data(), route=st.sampled_from(ADMIN_ROUTES), version=usually(st.sampled_from(["latest", "v1"])))
def test_admin_api(
    fuzz_stub: tuple[StubProcess, World],
    data: st.DataObject,
    route: tuple[str, str, SearchStrategy[object] | None],
    version: object,
) -> None:
    world = fuzz_stub[1]
    method, template, payload_strategy = route
    path = template
    while "{" in path:
        kind = path[path.index("{") + 1 : path.index("}")]
        strategy = {"id": ID, "foreign": FOREIGN_ID, "text": st.one_of(st.sampled_from(["result", "status"]), TEXT)}
        segment = world.segment(data.draw(strategy[kind], label=kind))
        path = path.replace("{" + kind + "}", segment, 1)
    if template == "/hosts" and data.draw(st.booleans(), label="team filter"):
        path += "?team_id=" + world.segment(data.draw(ID, label="team_id"))
    payload = data.draw(payload_strategy, label="body") if payload_strategy is not None else None
    world.send(method, f"/api/{world.segment(version)}/fleet{path}", payload, client=world.admin)


@FUZZ
@given(
    token=st.one_of(TEXT, st.binary(max_size=40)),
    scheme=st.sampled_from(["Bearer", "bearer", "Basic", "", "NodeKey"]),
    path=st.sampled_from(["/metrics", f"{ADMIN}/hosts", f"{ADMIN}/config", f"{ADMIN}/hosts/1"]),
)
def test_admin_authentication(fuzz_stub: tuple[StubProcess, World], token: str | bytes, scheme: str, path: str) -> None:
    """Any Authorization header (bytes beyond ASCII included) is a 401, never a failure."""
    world = fuzz_stub[1]
    value = token if isinstance(token, bytes) else token.encode("utf-8", "surrogatepass")
    # what an HTTP/1.1 field value can carry: no control characters, no surrounding whitespace
    header = bytes(b for b in scheme.encode() + b" " + value if b == 9 or 32 <= b != 127).strip(b" \t")
    response = world.send("GET", path, extra={"Authorization": header})
    assert response.status_code == 401


# --- the run as a whole -------------------------------------------------------------------------------------------


def hostile_corpus(world: World) -> list[tuple[str, str, object]]:
    """The issue's cases, replayed to see whether memory grows per request once the process is warm."""
    key, orbit = "<node_key>", "<orbit_key>"
    line = {"name": "q\ud800", "columns": {"n": float("nan"), "m": INVALID_UTF8, "x": "x" * 80, "big": 2**70}}
    return [
        ("POST", f"{OSQ}/log", {"node_key": key, "log_type": "result", "data": [line] * 2000}),
        ("POST", f"{OSQ}/distributed/write", {"node_key": key, "queries": {f"fleet_policy_query_{'9' * 30}": []}}),
        ("POST", f"{OSQ}/enroll", {"enroll_secret": SECRET, "host_identifier": "\udc00" + INVALID_UTF8}),
        (
            "POST",
            "/api/fleet/orbit/scripts/result",
            {"orbit_node_key": orbit, "execution_id": "x", "exit_code": HUGE_INT},
        ),
        ("GET", f"{ADMIN}/hosts/%C2%B2", None),
        ("GET", f"{ADMIN}/hosts/{'9' * 30}", None),
        ("PATCH", f"{ADMIN}/config", {"agent_options": {"config": {"options": {"x": float("inf")}}}}),
    ]


def test_the_stub_stayed_healthy(fuzz_stub: tuple[StubProcess, World]) -> None:
    """After everything above: memory flat over repeated hostile rounds, no 5xx counted, no traceback logged."""
    stub, world = fuzz_stub
    pid = stub.proc.pid
    corpus = hostile_corpus(world)

    def round_trip() -> None:
        for method, path, payload in corpus:
            world.send(method, path, payload, client=world.admin if path.startswith(ADMIN) else world.client)

    for _ in range(5):
        round_trip()
    warm = rss(pid)
    for _ in range(REPEAT_ROUNDS):
        round_trip()
    grown = rss(pid) - warm
    assert grown < RSS_REPEAT_GROWTH_LIMIT, (
        f"RSS grew {grown / 2**20:.1f} MiB over {REPEAT_ROUNDS} rounds of the same requests"
    )
    overall = rss(pid) - world.baseline_rss
    assert overall < RSS_GROWTH_LIMIT, f"RSS grew {overall / 2**20:.1f} MiB over {world.requests} requests"

    metrics = world.admin.get("/metrics").text
    assert not re.findall(r'^fleet_stub_http_requests_total\{.*status="5\d\d"\} \d+$', metrics, re.MULTILINE)
    assert world.requests > 0 and not any(code >= 500 for code in world.statuses)
    log_text = (stub.data_dir / "fleet-stub.log").read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log_text and "level=ERROR" not in log_text, log_text[-3000:]
    assert stub.stop() == 0
    _out, err = stub.output()
    assert "Traceback" not in err and "level=ERROR" not in err, err[-3000:]
