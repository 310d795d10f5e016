"""Lumen compatibility (issue 19): Lumen's marketplace paths and fields over the same engine."""
