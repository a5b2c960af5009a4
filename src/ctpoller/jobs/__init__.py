"""One module per thing ctpoller does: a poll cycle, backfill, delivery, reports."""
