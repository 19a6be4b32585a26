"""Generator service: beam search sampling with exact sequence log-probabilities (port 8001)."""
