"""The `iod` command."""
