"""Stand-alone benchmark and sanity scripts; a package so tests can import their functions."""
