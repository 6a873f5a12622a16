"""The activitynet annotation converter (see tools/data/README.md)."""
