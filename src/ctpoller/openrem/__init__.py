"""Every SELECT ctpoller runs against OpenREM: see ``openrem.source.OpenremSource``."""
