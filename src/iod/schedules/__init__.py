"""Recurring bandwidth schedules (docs/schedules.md)."""
