"""The msvd annotation converter (see tools/data/README.md)."""
