"""Retention: what the service keeps only for a while, deleted by periodic tasks."""
