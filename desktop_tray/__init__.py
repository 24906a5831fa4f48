"""fleet-desktop: the per-user tray app.

Owns the device-API client, the pure menu state machine, icons (Pillow), the pystray adapter and browser opening.
It imports no other package of ours: it ships as its own binary.
"""
