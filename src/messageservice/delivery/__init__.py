"""Outbound calls: app lifecycle events now, HANDLER deliveries later."""
