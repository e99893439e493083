"""Redis access: clients, scripts, the flush protocol, the consumer group's store."""
