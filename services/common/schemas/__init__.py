"""Wire models (v1), one module per service. Field names follow ARCHITECTURE.md exactly."""
