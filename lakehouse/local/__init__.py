"""Infrastructure for running the lakehouse on one machine: the embedded Kafka broker
(``opensky-lakehouse kafka``), a standalone Spark cluster with an S3-compatible server
(``python -m lakehouse.local.cluster``) and a fake OpenSky API (``python -m
lakehouse.local.fake_opensky``). The core (settings, catalog, transforms, jobs) never imports it.
"""
