"""Network drivers: what the worker calls to make the network match the database."""
