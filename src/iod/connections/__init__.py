"""Connections and their bandwidth: the spec's four operations."""
