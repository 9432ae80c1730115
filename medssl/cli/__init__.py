"""Command-line interface (``medssl``)."""
