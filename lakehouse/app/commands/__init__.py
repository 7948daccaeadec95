"""Sub-commands of the ``opensky-lakehouse`` CLI (``lakehouse.app.cli.COMMANDS``): one module per
command, each with ``configure(parser)`` and ``run(args, settings) -> int``."""
