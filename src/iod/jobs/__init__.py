"""The job queue lives in the same database as the data it acts on."""
