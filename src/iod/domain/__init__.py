"""Plain-Python domain: no framework, no database."""
