"""Sub-commands of the ``opensky-lakehouse`` CLI (see ``lakehouse.cli.COMMANDS``)."""
