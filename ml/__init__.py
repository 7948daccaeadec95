"""Anomaly detection: one feature function, a tail-model artefact (ml.detector) with lineage, a Spark
scoring step (pandas UDF, iterator form) and an evaluation on labelled data."""
