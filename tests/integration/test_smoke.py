from __future__ import annotations

from tests.support.agents import osquery_enroll
from tests.support.stub_server import RunningStub


def test_enroll_and_config(stub: RunningStub) -> None:
    with stub.client() as client:
        key = osquery_enroll(client)
        config = client.post("/api/v1/osquery/config", json={"node_key": key})
        assert config.status_code == 200
        assert config.json()["options"]["distributed_interval"] == 10
