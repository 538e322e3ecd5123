"""One dumper per database kind, found through the kinds registry (engines/kinds.py, column ``dumper``)."""
