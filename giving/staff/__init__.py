"""Staff web pages (server-rendered), mounted at /staff."""
