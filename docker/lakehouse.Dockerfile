# One image for the "cluster" profile of docker-compose.yml: the Spark master, the worker and
# the driver (`opensky-lakehouse run ...`) all run this project's virtualenv, so executors have
# the same Python, pandas, pyarrow and scikit-learn as the driver (pandas UDFs need that).
# The Spark daemons come from the pyspark package, as `lakehouse.cluster` starts them in tests.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/opensky-lakehouse
# The whole checkout (see .dockerignore): every package that exists is installed.
COPY . .
# Editable: the settings read conf/ beside the package directory.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir -e .

# pyspark's package directory is a Spark home (jars/, bin/spark-class); the launcher needs the
# Scala version spelled out because it is not a source build.
ENV PATH=/opt/venv/bin:$PATH \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    SPARK_SCALA_VERSION=2.13 \
    SPARK_NO_DAEMONIZE=1 \
    SPARK_WORKER_DIR=/tmp/spark-work
RUN useradd --create-home --uid 1000 lakehouse
USER lakehouse
# The jar cache (a volume in docker-compose.yml) must exist with this owner before it is mounted.
RUN mkdir -p /home/lakehouse/.cache/opensky-lakehouse
ENTRYPOINT ["opensky-lakehouse"]
