"""The simulator's version: osquery's version it imitates plus build metadata that says "simulator"."""

OSQUERY_VERSION = "5.14.1"
SIM_VERSION = f"{OSQUERY_VERSION}+sim"
