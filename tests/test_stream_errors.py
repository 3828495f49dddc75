"""How a failed stream is reported: one line naming the cause, no second copy of a traceback."""

from __future__ import annotations

import io
import json
import logging

from app.logs import configure_logging
from app.stream import root_cause

# The shape of a foreachBatch failure as PySpark hands it over (a permission error in a Delta write).
JVM_FAILURE = """[STREAM_FAILED] Query [id = 1, runId = 2] terminated with exception: [FOREACH_BATCH_USER_FUNCTION_ERROR] \
An error occurred in the user provided function in foreach batch sink. Reason: An exception was raised by the Python \
Proxy. Return Message: Traceback (most recent call last):
  File "/app/batch/handler.py", line 113, in __call__
    self.process(batch_df, batch_id)
py4j.protocol.Py4JJavaError: An error occurred while calling o3977.execute.
: org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/d/tables/gold. SQLSTATE: 58030
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.taskFailedWhileWritingRowsError(QueryExecutionErrors.scala:843)
Caused by: org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/d/tables/gold.
Caused by: java.io.FileNotFoundException: /d/tables/gold/part-00000.snappy.parquet (Permission denied)
\tat java.base/java.io.FileOutputStream.open0(Native Method)

 SQLSTATE: 39000
Caused by: py4j.Py4JException: An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):
  File "/app/batch/handler.py", line 113, in __call__
=== Streaming Query ===
Identifier: bronze_to_silver
Caused by: java.lang.IllegalStateException: not this one
"""

PYTHON_FAILURE = """[STREAM_FAILED] Query [id = 1] terminated with exception: [FOREACH_BATCH_USER_FUNCTION_ERROR] An error \
occurred. Reason: An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):
  File "/app/batch/handler.py", line 210, in _run
    raise_on_fail(by_action["fail"])
app.errors.DataQualityError: expectation current_price_not_positive failed on 3 records
 SQLSTATE: 39000
Caused by: py4j.Py4JException: An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):
app.errors.DataQualityError: expectation current_price_not_positive failed on 3 records
"""


def test_root_cause_is_the_innermost_jvm_cause():
    assert root_cause(JVM_FAILURE) == (
        "java.io.FileNotFoundException: /d/tables/gold/part-00000.snappy.parquet (Permission denied)"
    )


def test_root_cause_of_a_python_failure_is_the_last_line_of_its_traceback():
    assert root_cause(PYTHON_FAILURE) == (
        "app.errors.DataQualityError: expectation current_price_not_positive failed on 3 records"
    )


def test_root_cause_of_anything_else_is_its_first_line():
    assert root_cause("\n  the source folder vanished\nmore detail\n") == "the source folder vanished"


def test_py4j_callback_error_log_is_dropped_other_records_are_kept():
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("py4j.clientserver").exception(
                "There was an exception while executing the Python Proxy on the Python Side."
            )
        logging.getLogger("py4j.clientserver").error("Error while sending or receiving.")
        logging.getLogger("app.stream").warning("stream.stopping")
    finally:
        configure_logging("json", "INFO")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["Error while sending or receiving.", "stream.stopping"]
    assert "Traceback" not in out.getvalue()
