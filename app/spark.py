"""The one place that builds a SparkSession (in the style of ``configure_spark_with_delta_pip``).

Locally it starts Spark with the Delta jars resolved from Maven Central on first start (cached by
Ivy afterwards), the Delta SQL extension and catalog, UTC session time, quiet logs and the UI off.
On a cluster that already has Delta (Databricks) it reuses the active session and adds nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata, resources
from typing import TYPE_CHECKING

from app.errors import EnvironmentSetupError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from app.config import Settings

MIN_JAVA = 17
SCALA_VERSION = "2.13"
# PySpark 4 wraps every Column function so that an error can name the Python line that built the
# expression: each call asks the JVM for the active session, this setting, and sets and clears a
# thread-local origin, five or six py4j round trips. A batch builds ~500 expressions (parsing,
# the expectations, the derived columns), so that was ~3,000 round trips and 0.5-1 s of the
# driver's time per batch (docs/BENCHMARKS.md, "Batch engine v3"). Errors keep their message,
# their SQL query context and the Python traceback; only the DataFrame call site goes.
DATAFRAME_DEBUGGING_CONF = "spark.python.sql.dataFrameDebugging.enabled"
# A kernel output becomes a Spark frame through ``createDataFrame`` of an Arrow table. Below this
# size Spark makes it a LocalRelation, rows held in the plan: right for a steady batch (no job to
# read it). A 51,000-record batch stages ~104,000 silver rows, and with them in the plan its silver
# MERGE spent ~6 s on the driver between jobs; above the threshold the rows go in as Arrow
# batches (an RDD), and that MERGE took 14-16 s instead of 21-23 s (docs/BENCHMARKS.md).
ARROW_LOCAL_RELATION_CONF = "spark.sql.execution.arrow.localRelationThreshold"
ARROW_LOCAL_RELATION_MAX = "4m"
# Session settings coinlake needs on its own session and on a reused (Databricks) one.
SESSION_CONF = {DATAFRAME_DEBUGGING_CONF: "false", ARROW_LOCAL_RELATION_CONF: ARROW_LOCAL_RELATION_MAX}


def delta_maven_coordinate() -> str:
    """The Delta jar matching the installed ``pyspark`` and ``delta-spark`` (e.g. ``io.delta:delta-spark_4.2_2.13:4.4.0``)."""
    import pyspark

    spark_major_minor = ".".join(pyspark.__version__.split(".")[:2])
    delta_version = metadata.version("delta-spark")
    return f"io.delta:delta-spark_{spark_major_minor}_{SCALA_VERSION}:{delta_version}"


def java_major_version(java: str | None = None) -> int:
    """The major version of the Java that Spark would start.

    Raises:
        EnvironmentSetupError: no Java found, or its version cannot be read.
    """
    java = java or _java_executable()
    if java is None:
        raise EnvironmentSetupError(
            f"Java {MIN_JAVA}+ is required but was not found: install a JDK/JRE {MIN_JAVA} "
            "(e.g. 'apt-get install openjdk-17-jre-headless') or set JAVA_HOME"
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise EnvironmentSetupError(f"cannot run {java!r}: {exc}; install Java {MIN_JAVA}+") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise EnvironmentSetupError(f"cannot read the version of {java!r}; install Java {MIN_JAVA}+")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java_executable() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        if os.path.exists(candidate):
            return candidate
    return shutil.which("java")


def _settings() -> Settings:
    """The runtime knobs (driver memory, Ivy and cache folders) come from Settings, never raw env."""
    from app.config import load_settings

    return load_settings()


def _on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def build_spark(
    *,
    app_name: str = "coinlake",
    master: str = "local[*]",
    shuffle_partitions: int = 4,
    ui: bool = False,
    extra_conf: dict[str, str] | None = None,
    driver_memory: str | None = None,
    ivy_dir: str | None = None,
) -> SparkSession:
    """Build (or reuse, on Databricks) the SparkSession with Delta Lake configured.

    Args:
        app_name: Spark application name.
        master: Spark master for local runs (``local[2]``, ``local-cluster[2,1,1024]``, ...).
        shuffle_partitions: ``spark.sql.shuffle.partitions``; small data wants few.
        ui: start the Spark UI.
        extra_conf: further Spark settings, applied last.
        driver_memory: ``spark.driver.memory``; ``COINLAKE_DRIVER_MEMORY`` (Settings) when None.
        ivy_dir: ``spark.jars.ivy``; ``COINLAKE_IVY_DIR`` (Settings) when None.

    Returns:
        The session.

    Raises:
        EnvironmentSetupError: Java is missing or too old, or Spark could not start.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and _on_databricks():
        # The cluster's zone is whatever its admin set; metric days, buckets and row hashes
        # (timestamps in to_json) must be UTC whatever the cluster says.
        active.conf.set("spark.sql.session.timeZone", "UTC")
        for key, value in SESSION_CONF.items():
            active.conf.set(key, value)
        return active

    major = java_major_version()
    if major < MIN_JAVA:
        raise EnvironmentSetupError(
            f"Java {MIN_JAVA}+ is required, found Java {major}: install a JDK {MIN_JAVA} and set JAVA_HOME"
        )
    # The Python workers must run the interpreter that has our dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    log4j = str(resources.files("app").joinpath("log4j2.properties"))
    java_opts = f"-Dlog4j.configurationFile=file:{log4j} -Dlog4j2.configurationFile=file:{log4j}"

    if driver_memory is None or ivy_dir is None:
        settings = _settings()
        driver_memory = driver_memory or settings.driver_memory
        ivy_dir = ivy_dir or settings.ivy_dir
    coordinate = delta_maven_coordinate()
    cached_jars = _cached_jars(coordinate)
    conf: dict[str, str] = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(max(2, shuffle_partitions)),
        "spark.ui.enabled": "true" if ui else "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": driver_memory,
        "spark.driver.extraJavaOptions": java_opts,
        "spark.executor.extraJavaOptions": java_opts,
        # Adaptive execution re-plans each shuffle stage as its own job: on local[N] with a few
        # shuffle partitions there is nothing to coalesce, and a batch ran twice the jobs and up to 10%
        # slower with it on (docs/BENCHMARKS.md). Databricks keeps its own setting (session reused).
        "spark.sql.adaptive.enabled": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "true",
        "spark.sql.streaming.fileSource.cleaner.numThreads": "1",
        **SESSION_CONF,
    }
    if cached_jars:
        # Resolved before: skip Ivy (no resolution report on every start, and faster).
        conf["spark.jars"] = ",".join(without_spark_provided(cached_jars))
    else:
        conf["spark.jars.packages"] = coordinate
    if ivy_dir:
        conf["spark.jars.ivy"] = ivy_dir
    if master.startswith("local-cluster"):
        conf.update(_local_cluster_conf(master))
    conf.update(extra_conf or {})

    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM died: give one line, not a Java stack trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EnvironmentSetupError(
            f"Spark failed to start ({first}); check Java {MIN_JAVA}+ and that Maven Central is "
            f"reachable for {delta_maven_coordinate()}"
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    if not cached_jars and "spark.jars.packages" in conf:
        _remember_jars(coordinate, spark.sparkContext.getConf().get("spark.jars", ""))
    return spark


def resolve_jars() -> bool:
    """Resolve the Delta jars once (start and stop a one-core session) unless an earlier start did.

    ``./dev.sh test`` calls it before starting parallel test workers, which would otherwise all
    resolve into the same Ivy cache at once on a fresh machine. Returns True when it resolved.
    """
    if _cached_jars(delta_maven_coordinate()):
        return False
    build_spark(app_name="coinlake-resolve-jars", master="local[1]", shuffle_partitions=1).stop()
    return True


def _jar_manifest(coordinate: str) -> str:
    cache = _settings().cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "coinlake")
    return os.path.join(cache, "jars-" + re.sub(r"[^A-Za-z0-9_.-]", "_", coordinate) + ".txt")


def _cached_jars(coordinate: str) -> list[str]:
    """The jar files Ivy resolved for ``coordinate`` on an earlier start, if all still exist."""
    try:
        with open(_jar_manifest(coordinate), encoding="utf-8") as fh:
            jars = [line.strip() for line in fh if line.strip()]
    except OSError:
        return []
    return jars if jars and all(os.path.exists(j) for j in jars) else []


_JAR_VERSION = re.compile(r"-\d[^/]*\.jar$")


def _artifact(jar_name: str, *, ivy: bool = False) -> str:
    """``jackson-core`` for Spark's ``jackson-core-2.21.2.jar`` or Ivy's ``<org>_jackson-core-2.13.5.jar``."""
    if ivy and "_" in jar_name:
        jar_name = jar_name.split("_", 1)[1]
    return _JAR_VERSION.sub("", jar_name)


def without_spark_provided(jars: list[str], spark_jars_dir: str | None = None) -> list[str]:
    """Drop the resolved jars whose artifact Spark already ships (Jackson, Parquet, Hadoop, ...).

    Ivy resolves Delta's whole dependency tree, but Spark loads its own copy of those libraries
    first (parent-first class loading), so the extra copies are dead weight that every executor
    would still fetch (73 of the 85 MB measured here). The ``io.delta`` jars are always kept.
    """
    if spark_jars_dir is None:
        import pyspark

        spark_jars_dir = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    try:
        provided = {_artifact(name) for name in os.listdir(spark_jars_dir) if name.endswith(".jar")}
    except OSError:
        return list(jars)
    return [
        j
        for j in jars
        if os.path.basename(j).startswith("io.delta_")
        or _artifact(os.path.basename(j), ivy=True) not in provided
    ]


def _remember_jars(coordinate: str, spark_jars: str) -> None:
    """Record the local jar files Ivy resolved (``spark.jars`` after a ``--packages`` start)."""
    jars = [j[len("file://") :] if j.startswith("file://") else j for j in spark_jars.split(",") if j]
    if not jars or not all(os.path.exists(j) for j in jars):
        return
    path = _jar_manifest(coordinate)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(jars) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache: the next start resolves with Ivy again


_LOCAL_CLUSTER = re.compile(r"^local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]$")


def _local_cluster_conf(master: str) -> dict[str, str]:
    """Settings for ``local-cluster[workers,cores,memoryMB]``: real executor JVMs on this machine.

    The jobs wait (up to two minutes) for every executor before their first task, and an executor
    asks for no more memory than its worker has. The workers launch executors from ``SPARK_HOME``
    and keep each executor's files (logs, a copy of every ``spark.jars`` jar) in ``SPARK_HOME/work``;
    unless ``SPARK_HOME`` is set, it points at a throwaway folder linking the pip-installed
    pyspark's ``bin`` and ``jars``, so those copies never land inside the package and go at exit.
    Executors get the Delta jars through ``spark.jars`` and run ``PYSPARK_PYTHON``; they see the
    driver's absolute data paths because they share its disk.
    """
    match = _LOCAL_CLUSTER.match(master.strip())
    if match is None:
        raise EnvironmentSetupError(
            f"Spark master {master!r}: expected local-cluster[workers,cores,memoryMB], e.g. local-cluster[2,1,1024]"
        )
    workers, cores, memory_mb = (int(g) for g in match.groups())
    if "SPARK_HOME" not in os.environ:
        import atexit
        import tempfile

        import pyspark

        package = os.path.dirname(os.path.abspath(pyspark.__file__))
        home = tempfile.mkdtemp(prefix="coinlake-spark-home-")
        for name in ("bin", "jars"):
            os.symlink(os.path.join(package, name), os.path.join(home, name))
        atexit.register(_stop_spark_and_remove, home)
        os.environ["SPARK_HOME"] = home
    return {
        "spark.executor.memory": f"{memory_mb}m",
        "spark.cores.max": str(workers * cores),
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
    }


def _stop_spark_and_remove(home: str) -> None:
    """At exit: stop Spark first, so the executors end with the application (when the JVM just
    dies, the local master keeps relaunching them while it shuts down), then delete ``home``."""
    from pyspark import SparkContext

    active = SparkContext._active_spark_context
    if active is not None:
        try:
            active.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
    shutil.rmtree(home, ignore_errors=True)
