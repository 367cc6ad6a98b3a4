"""docs/v3/how-to-guides/workflows/add-logging.mdx."""

import logging

from prefect import flow, task


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


def _underlying(logger):
    return logger.logger if isinstance(logger, logging.LoggerAdapter) else logger


def ex_logging_run_logger():
    """'Emit custom logs': get_run_logger() in a flow and a task; levels kept."""
    from prefect.logging import get_run_logger
    collect = Collect()

    @task(name="log-example-task")
    def logger_task():
        get_run_logger().info("INFO from a task.")
        return "task ran"

    @flow(name="log-example-flow")
    def logger_flow():
        logger = get_run_logger()
        _underlying(logger).addHandler(collect)
        try:
            logger.info("INFO level log message.")
            logger.error("ERROR level log message.")
            logger.critical("CRITICAL level log message.")
            return logger_task()
        finally:
            _underlying(logger).removeHandler(collect)

    assert logger_flow() == "task ran"
    messages = [(level, message) for level, message in collect.lines if "level log message" in message]
    assert messages == [("INFO", "INFO level log message."), ("ERROR", "ERROR level log message."),
                        ("CRITICAL", "CRITICAL level log message.")]


def ex_logging_log_prints():
    """'Log with print statements': log_prints=True turns a flow's print() into INFO log lines."""
    from prefect.logging import get_run_logger
    collect = Collect()

    @task
    def my_task():
        print("printed from a task")
        return 1

    @flow(log_prints=True)
    def my_flow():
        logger = _underlying(get_run_logger())
        logger.addHandler(collect)
        try:
            print("printed from a flow")
            return my_task()
        finally:
            logger.removeHandler(collect)

    assert my_flow() == 1
    assert ("INFO", "printed from a flow") in collect.lines


def ex_logging_task_opts_out():
    """'Log with print statements': a task with log_prints=False inside a log_prints flow still runs."""

    @task(log_prints=False)
    def quiet():
        print("not logged")
        return "quiet"

    @flow(log_prints=True)
    def my_flow():
        return quiet()

    assert quiet.log_prints is False
    assert my_flow() == "quiet"


def ex_logging_outside_run_raises():
    """get_run_logger() outside a run raises MissingContextError (a RuntimeError)."""
    from prefect.logging import get_run_logger
    try:
        get_run_logger()
    except RuntimeError as exc:
        assert type(exc).__name__ == "MissingContextError"
    else:
        raise AssertionError("get_run_logger() outside a run did not raise")
