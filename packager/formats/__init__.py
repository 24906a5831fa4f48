"""One builder per installer format, each ``build(staged: StagedPackage, outfile: Path) -> BuildResult``."""
