"""Use cases of crm. Never commits: the caller's unit of work does."""
