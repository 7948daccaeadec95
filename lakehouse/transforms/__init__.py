"""Pure layer transforms (``DataFrame -> DataFrame``): no I/O, chained with ``df.transform``."""
