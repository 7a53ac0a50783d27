"""The ``mixflow`` command line."""
