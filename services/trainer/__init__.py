"""Trainer service: fine-tunes a model on PPER minibatches sampled from the buffer (API + Celery worker)."""
