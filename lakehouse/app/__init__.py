"""The application shell: the ``opensky-lakehouse`` command line, one module per command."""
