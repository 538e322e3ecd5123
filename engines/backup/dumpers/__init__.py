"""One dumper per database kind (chosen through engines.backup.engine.DUMPERS)."""
