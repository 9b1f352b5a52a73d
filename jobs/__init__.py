"""Work that outlives a request: the job queue in PostgreSQL and the workers that run it."""
