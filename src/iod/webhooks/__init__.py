"""Webhooks: customers' endpoints, signed deliveries of their events (docs/webhooks.md)."""
