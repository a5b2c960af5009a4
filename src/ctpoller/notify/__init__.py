"""Notifiers: deliver recorded messages (SMTP, .eml files) and keep the QA archive (.xlsx)."""
