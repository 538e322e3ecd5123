"""dbfleet engines: pure Python database operations (no Celery below this package)."""
