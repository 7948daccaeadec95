"""Anomaly detection: one feature function, an IsolationForest artefact with lineage, a Spark
scoring step (pandas UDF, iterator form) and an evaluation on labelled data."""
