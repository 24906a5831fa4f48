"""Signing of the installers ``orbitctl package`` builds (issue 17).

X.509 (ADR 0015): the identity (``x509_identity``), its flags (``signing_options``) and Authenticode for the .msi
through osslsigncode (``authenticode``); the .pkg's xar signature is written by ``packager.formats.xar`` with the
identity's key.

OpenPGP (ADR 0016): its flags (``openpgp_options``), which (sub)key of an armored secret key signs
(``openpgp_key``, pure), a private temporary GnuPG home for inspecting and signing (``gpg_home``), the loaded key
with its checks (``signing_key``), and the signed apt repository for .deb files (``apt_repository``, ``orbitctl repo
apt``: ``repo_cli``); the .rpm signature itself is written by rpm-rs in ``packager.formats.rpm``."""
