"""Signing of the installers ``orbitctl package`` builds with an X.509 identity: the identity itself
(``x509_identity``), its flags (``signing_options``) and Authenticode for the .msi through osslsigncode
(``authenticode``). The .pkg's xar signature is written by ``packager.formats.xar`` with the identity's key."""
