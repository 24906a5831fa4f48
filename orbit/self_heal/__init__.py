"""Self-healing installs (issue 18): each child's executable checked against what was signed before it starts, and
reinstalled from the local versions store or the update repository when it is not that any more.

- ``trusted_installs``: orbit's record of each executed path's signed length and hash (state/trusted-installs.json)
- ``install_healer``: the check (full hash at start and after a crash, fingerprint otherwise) and the repair
"""
