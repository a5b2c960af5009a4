"""The emails: building them (render), and the transports that deliver them (SMTP, .eml files)."""
