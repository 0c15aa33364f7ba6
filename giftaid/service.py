"""Use cases of giftaid. Never commits: the caller's unit of work does."""
