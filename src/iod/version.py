"""The server's release (the `iod` namespace package has no `__init__`: docs/decisions.md)."""

__version__ = "0.1.0"
