"""The detection core: pure, event-time driven, no Kafka or faust imports."""
