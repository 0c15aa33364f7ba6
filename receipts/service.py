"""Use cases of receipts. Never commits: the caller's unit of work does."""
