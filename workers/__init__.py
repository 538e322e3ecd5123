"""The Celery side of dbfleet: thin tasks that resolve ids, call an engine, return JSON."""
