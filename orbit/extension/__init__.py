"""orbit's osquery extension: the Thrift extension protocol and the tables orbit serves to osqueryd.

Owns the Thrift binary protocol codec (``thrift_codec``), osquery's extension API types (``osquery_api``), the
asyncio socket transport (``thrift_socket``), the extension-manager client (``extension_client``), the
registering/serving ``ExtensionServer`` (``extension_server``), the table plugins ``orbit_info`` and ``fleetd_logs``
(``orbit_tables``) and the in-memory log ring behind ``fleetd_logs`` (``log_ring``). It shares no code with
``osquery_sim``, whose extension manager is written independently from the same IDL.
"""

from orbit.extension.extension_server import DEFAULT_NAME, ExtensionServer
from orbit.extension.log_ring import RingBufferLogHandler
from orbit.extension.orbit_tables import ORBIT_INFO_COLUMNS, FleetdLogsTable, OrbitInfoTable, TablePlugin

__all__ = [
    "DEFAULT_NAME",
    "ORBIT_INFO_COLUMNS",
    "ExtensionServer",
    "FleetdLogsTable",
    "OrbitInfoTable",
    "RingBufferLogHandler",
    "TablePlugin",
]
