"""Core services: the portal, its users, apps, tokens and senders. No HTTP in here."""
