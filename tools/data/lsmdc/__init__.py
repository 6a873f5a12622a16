"""The lsmdc annotation converter (see tools/data/README.md)."""
