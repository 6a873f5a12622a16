"""Command-line tools. A package so that scripts and tests import shared tool code by
name (``tools.data.conversion``) instead of by file path."""
