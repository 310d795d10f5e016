"""Customers and their API clients: the admin side of tenancy."""
