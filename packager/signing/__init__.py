"""OpenPGP signing of the Linux packages (issue 17, ADR 0016): which (sub)key of an armored secret key signs
(``openpgp_key``, pure), a private temporary GnuPG home for inspecting and signing (``gpg_home``), the loaded
key with its checks (``signing_key``), and the signed apt repository for .deb files (``apt_repository``). The .rpm
signature itself is written by rpm-rs in ``packager.formats.rpm``."""
