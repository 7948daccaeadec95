"""opensky-lakehouse: OpenSky state vectors through Kafka into a Delta Lake medallion lakehouse."""

__version__ = "0.1.0"
