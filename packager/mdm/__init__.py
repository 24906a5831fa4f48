"""What an MDM needs beside the installer (docs/adr/0021-mdm-deployment.md): ``orbitctl mdm profile`` writes the
macOS configuration profile (``.mobileconfig``, payload type ``com.fleetdm.fleetd.config``) that carries the Fleet URL
and enroll secret to a package built with ``--use-system-configuration``; optionally CMS-signed."""
