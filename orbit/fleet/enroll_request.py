"""The body orbit enrolls with (``POST /api/fleet/orbit/enroll``): the secret and what osqueryd says the host is.

``osquery_identifier`` is sent only under ``--host-identifier=instance`` (Fleet then keys the host by osquery's
instance id instead of the hardware UUID; docs/reference/fleet-api.md).
"""

from __future__ import annotations

from osquery_bin_manager.host_info import HostInfo


def enroll_body(host: HostInfo, secret: str, host_identifier: str) -> dict[str, str]:
    return {
        "enroll_secret": secret,
        "hardware_uuid": host.hardware_uuid,
        "hardware_serial": host.hardware_serial,
        "hostname": host.hostname,
        "platform": host.platform,
        "platform_like": host.platform_like,
        "osquery_identifier": host.instance_id if host_identifier == "instance" else "",
        "computer_name": host.computer_name,
        "hardware_model": host.hardware_model,
    }
