"""The benchmark suite: ``opensky-lakehouse bench [--quick]`` (see ``bench/suite.py``).

Sections: throughput (records/s per layer against a plain Kafka-to-Delta copy measured in the
same run), freshness (Kafka append to visibility in ``gold.live_flights``), scoring (pandas UDF
against the model called directly), dashboard reads (delta-rs loads before and after
``maintain``) and memory (peak RSS of the demo stack). Results: ``bench/results/<stamp>.json``
and ``.md``; the README's "Performance" section is rendered from the JSON.
"""
