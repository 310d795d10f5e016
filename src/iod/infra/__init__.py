"""Infrastructure: settings, database, HTTP plumbing, problems, the server, logging, metrics."""
