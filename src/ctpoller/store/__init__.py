"""ctpoller's own store (SQLite or PostgreSQL): see ``store.store.StateStore``."""
