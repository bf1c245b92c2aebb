"""Domain events, the durable outbox, notification channels and their templates."""
