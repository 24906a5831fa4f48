"""Text of the macOS package: the LaunchDaemon plist, ``Distribution``, ``PackageInfo``, ``postinstall`` and the
uninstall script an MDM pushes (``/opt/orbit/bin/uninstall``)
(docs/reference/packaging.md §3.4, §5.6; orbit-behaviour.md §9.3). Pure functions of their arguments; every value that
reaches XML is escaped and every value that reaches the shell script is quoted.
"""

from __future__ import annotations

import plistlib
import shlex
from collections.abc import Mapping, Sequence
from typing import Final
from xml.sax.saxutils import escape, quoteattr

LAUNCHD_LABEL: Final = "com.fleetdm.orbit"
LAUNCHD_PLIST_PATH: Final = f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"
STDOUT_LOG: Final = "/var/log/orbit/orbit.stdout.log"
STDERR_LOG: Final = "/var/log/orbit/orbit.stderr.log"
THROTTLE_INTERVAL: Final = 10
TITLE: Final = "Fleet osquery"
COMPONENT_DIRECTORY: Final = "base.pkg"  # the xar directory the Distribution's pkg-ref points at ("#base.pkg")
INBAND_UPGRADE_MARKER: Final = "/opt/orbit/.inband_upgrade"
UNINSTALL_SCRIPT: Final = "bin/uninstall"  # under the agent root: /opt/orbit/bin/uninstall
KEYSTORE_SERVICE: Final = "com.fleetdm.fleetd.enroll.secret"  # orbit's Keychain item (orbit/fleet/enroll_secret.py)
BOOTSTRAP_ATTEMPTS: Final = 30


def component_identifier(identifier: str) -> str:
    return f"{identifier}.base.pkg"


def launchd_plist(program: str, environment: Mapping[str, str]) -> bytes:
    """The LaunchDaemon: runs ``program`` (``/opt/orbit/bin/orbit/orbit``, never the user-writable
    ``/usr/local/bin/orbit``) as root at load, kept alive with launchd's 10 s throttle. Keys are sorted, so the
    XML is the same for the same input."""
    document = {
        "EnvironmentVariables": dict(environment),
        "KeepAlive": True,
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [program],
        "RunAtLoad": True,
        "StandardErrorPath": STDERR_LOG,
        "StandardOutPath": STDOUT_LOG,
        "ThrottleInterval": THROTTLE_INTERVAL,
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=True)


def distribution_xml(identifier: str, version: str, install_kbytes: int) -> bytes:
    component = quoteattr(component_identifier(identifier))
    text = f"""<?xml version="1.0" encoding="utf-8"?>
<installer-gui-script minSpecVersion="2">
    <title>{escape(TITLE)}</title>
    <options customize="never" hostArchitectures="arm64,x86_64" require-scripts="false" \
allow-external-scripts="false"/>
    <domains enable_anywhere="false" enable_currentUserHome="false" enable_localSystem="true"/>
    <choices-outline>
        <line choice="choiceBase"/>
    </choices-outline>
    <choice id="choiceBase" title={quoteattr(TITLE)} enabled="false" selected="true" \
description={quoteattr(f"Standard installation for {TITLE}.")}>
        <pkg-ref id={component}/>
    </choice>
    <pkg-ref id={component} version={quoteattr(version)} auth="root" \
installKBytes="{install_kbytes}">#{COMPONENT_DIRECTORY}</pkg-ref>
    <pkg-ref id={component}>
        <bundle-version>
            <bundle id={quoteattr(identifier)} path=""/>
        </bundle-version>
    </pkg-ref>
</installer-gui-script>
"""
    return text.encode("utf-8")


def package_info_xml(
    identifier: str, version: str, *, number_of_files: int, install_kbytes: int, postinstall: bool
) -> bytes:
    scripts = '    <postinstall file="./postinstall"/>\n' if postinstall else ""
    text = f"""<?xml version="1.0" encoding="utf-8"?>
<pkg-info format-version="2" identifier={quoteattr(component_identifier(identifier))} \
version={quoteattr(version)} install-location="/" auth="root">
  <payload numberOfFiles="{number_of_files}" installKBytes="{install_kbytes}"/>
  <scripts>
{scripts}  </scripts>
  <bundle-version/>
</pkg-info>
"""
    return text.encode("utf-8")


def postinstall_script(links: Sequence[tuple[str, str]], *, start_service: bool) -> bytes:
    """POSIX sh run by Installer as root after the payload: re-point the current-orbit links, then (with the
    service) restart the LaunchDaemon the way Fleet does — immediately, or 30 s later in the background when orbit
    is installing its own upgrade (``.inband_upgrade``), so the installer is not killed mid-install.

    ``links`` are ``(absolute link path, target)`` pairs, e.g. ``("/opt/orbit/bin/orbit/orbit",
    "macos/stable/orbit")``.
    """
    lines = [
        "#!/bin/sh",
        "# postinstall: runs as root after the payload is in place.",
        "",
        "# The current orbit (the service runs /opt/orbit/bin/orbit/orbit) and its convenience link.",
    ]
    for link, target in links:
        lines.append(f"ln -sfn {shlex.quote(target)} {shlex.quote(link)}")
    lines += [
        "mkdir -p /usr/local/bin",
        "ln -sfn /opt/orbit/bin/orbit/orbit /usr/local/bin/orbit",
    ]
    if start_service:
        lines += [
            "",
            f"DAEMON_LABEL={shlex.quote(LAUNCHD_LABEL)}",
            f"DAEMON_PLIST={shlex.quote(LAUNCHD_PLIST_PATH)}",
            "mkdir -p /var/log/orbit",
            "",
            "# bootstrap fails while a booted-out orbit is still stopping:",
            f"# {BOOTSTRAP_ATTEMPTS} attempts, 1 s apart.",
            "start_daemon() {",
            '\tlaunchctl enable "system/${DAEMON_LABEL}"',
            "\tcount=0",
            '\twhile ! launchctl bootstrap system "${DAEMON_PLIST}"; do',
            "\t\tcount=$((count + 1))",
            f'\t\tif [ "$count" -ge {BOOTSTRAP_ATTEMPTS} ]; then',
            '\t\t\techo "Failed to bootstrap system ${DAEMON_PLIST}"',
            "\t\t\treturn 1",
            "\t\tfi",
            '\t\techo "Retrying launchctl bootstrap..."',
            "\t\tsleep 1",
            "\tdone",
            '\techo "Successfully bootstrapped system ${DAEMON_PLIST}"',
            '\tlaunchctl kickstart "system/${DAEMON_LABEL}"',
            "}",
            "",
            "stop_daemon() {",
            "\tpkill fleet-desktop || true",
            '\tlaunchctl bootout "system/${DAEMON_LABEL}" 2>/dev/null || true',
            "}",
            "",
            f"if [ -f {INBAND_UPGRADE_MARKER} ]; then",
            f"\trm -f {INBAND_UPGRADE_MARKER}",
            "\t# orbit is installing its own upgrade and manages this installer: restart it only after we are done.",
            '\techo "In-band upgrade: restarting ${DAEMON_LABEL} in 30 s."',
            "\t(sleep 30; stop_daemon; start_daemon) >/dev/null 2>&1 &",
            "\texit 0",
            "fi",
            "",
            "stop_daemon",
            "start_daemon || exit 1",
        ]
    lines += ["exit 0", ""]
    return "\n".join(lines).encode("utf-8")


def uninstall_script(identifier: str, agent_root: str) -> bytes:
    """POSIX sh that removes what the package installed, as Fleet's own macOS uninstall script does: stop and
    unload the LaunchDaemon, stop Fleet Desktop, remove the plist, the agent root, the logs and the
    ``/usr/local/bin/orbit`` link, drop orbit's Keychain item and make Installer forget the receipt. Run as root by
    the MDM (``sudo /opt/orbit/bin/uninstall``); it removes itself with the agent root. ``--target VOLUME``
    cleans a mounted system volume instead of the running system (no launchctl there). Every step tolerates what
    is already gone, so a second run succeeds too."""
    receipt = component_identifier(identifier)
    lines = [
        "#!/bin/sh",
        "# Removes the Fleet agent (orbit, osqueryd, Fleet Desktop) installed by this package. Run as root.",
        "# Usage: uninstall [--target /Volumes/System-volume]",
        "set -u",
        'target=""',
        'if [ "${1:-}" = "--target" ]; then',
        '	target="${2:?--target needs a volume path}"',
        '	if [ ! -d "$target" ] || [ "$target" = "/" ]; then',
        '		echo "uninstall: --target must be a mounted volume, not ${target}" >&2',
        "		exit 2",
        "	fi",
        'elif [ "$#" -ne 0 ]; then',
        '	echo "usage: uninstall [--target VOLUME]" >&2',
        "	exit 2",
        "fi",
        'if [ "$(id -u)" -ne 0 ]; then',
        '	echo "uninstall: run as root (sudo)" >&2',
        "	exit 1",
        "fi",
        "",
        f"DAEMON_LABEL={shlex.quote(LAUNCHD_LABEL)}",
        'if [ -z "$target" ]; then',
        "	# the running system: stop orbit (it stops osqueryd) and Fleet Desktop",
        '	launchctl bootout "system/${DAEMON_LABEL}" 2>/dev/null || true',
        "	pkill fleet-desktop 2>/dev/null || true",
        f"	security delete-generic-password -s {shlex.quote(KEYSTORE_SERVICE)} >/dev/null 2>&1 || true",
        "fi",
        "",
        f'rm -f "${{target}}"{shlex.quote(LAUNCHD_PLIST_PATH)}',
        f'rm -rf "${{target}}"{shlex.quote(agent_root)} "${{target}}/var/lib/orbit" "${{target}}/var/log/orbit"',
        'rm -f "${target}/usr/local/bin/orbit"',
        f'pkgutil --volume "${{target:-/}}" --forget {shlex.quote(receipt)} >/dev/null 2>&1 || true',
        'echo "Fleet agent removed${target:+ from ${target}}"',
        "exit 0",
        "",
    ]
    return "\n".join(lines).encode("utf-8")
