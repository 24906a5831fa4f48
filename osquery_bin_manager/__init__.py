"""Everything about the osqueryd binary.

Owns the TUF target names per platform, install/extract/verify, version detection, host info read with
``osqueryd -S --json``, the osqueryd argv builder (default flags, flagfile, protected flags after it) and health
checks. Depends only on the standard library and psutil.
"""
