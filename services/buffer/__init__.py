"""Buffer service: tasks, experiences, P2Value and prioritized sampling (port 8003)."""
