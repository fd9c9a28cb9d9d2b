"""The Celery implementation: the API publishes, a separate worker runs the work."""
