"""Face detection, alignment, quality checks and face choice, independent of Kafka."""
