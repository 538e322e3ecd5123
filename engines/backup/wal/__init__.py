"""WAL archive of PostgreSQL databases in the backup repository (``wal/<database id>/<file>``)."""
