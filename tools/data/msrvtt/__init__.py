"""The msrvtt annotation converter (see tools/data/README.md)."""
