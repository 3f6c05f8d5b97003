"""The durable prediction log: one record per inference request and per reported outcome,
written as Parquet under a log URI (``prediction_log.schema``) by ``prediction_log.writer``, and
read by ``prediction_log.reader`` (``trace``, ``live_accuracy``) and the ``model-trace`` CLI.
"""
