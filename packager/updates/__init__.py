"""``orbitctl updates``: the TUF repository that agents update from (Fleet's ``fleetctl updates`` verbs).

``REPO/keys/`` holds the private keys (ed25519, PKCS#8 encrypted with the role's passphrase), ``REPO/repository/``
the public part to serve (metadata at its top, files under ``targets/``). See docs/adr/0004.
"""
