"""The didemo annotation converter (see tools/data/README.md)."""
