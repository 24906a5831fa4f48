"""``orbitctl package``: validation of fleetctl's flags, fetching the binaries through TUF, the staged layout
shared by all formats, and dispatch to the format builders in ``packager.formats``."""
