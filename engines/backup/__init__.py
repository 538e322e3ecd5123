"""The backup engine: a deduplicated, compressed, encrypted repository for every database kind.

Format: docs/backup-repository.md. Entry points: run_backup, restore_backup, verify, prune, drill.
"""
