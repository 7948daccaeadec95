"""Layer jobs. Each is a plain ``spark-submit`` entry point and a ``run <layer>`` sub-command.

Every job module exposes ``start(spark, settings, once) -> list[StreamingQuery]``; the thin
edge code (read, write, checkpoint) lives there and the logic in ``lakehouse.transforms``.
"""
