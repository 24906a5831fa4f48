"""orbit's TUF update client: fetch, verify and install orbit, osqueryd and Fleet Desktop.

Owns the HTTPS client shared with the Fleet API client (``http_client``: CA, mTLS, proxies, timeouts, connect
retries), python-tuf's httpx fetcher with per-read timeouts and a total deadline per file (``fetcher``), Fleet's
target names (``targets``), the verified repository client with the pinned root and a locked metadata directory
(``repository_client``, ``directory_lock``), safe ``.tar.gz`` extraction (``archive``), the exec check
(``exec_check``), atomic installation beside the previous version with rollback (``installer``, ``install_record``,
``atomic_fs``), the per-hash retry limiter (``retry_limiter``), the periodic update runner (``update_runner``), typed
errors (``errors``) and the TUF conformance CLI (``conformance_client``).

Freeze safety is the rule of the package: no repository or network error ever touches an installed binary, and
the trusted metadata is never deleted to "fix" an error.
"""
