"""Embedded corpora that `prepare` builds from what is installable offline (one module per source)."""
