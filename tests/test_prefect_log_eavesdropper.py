"""``LogEavesdropper`` (Prefect's ``prefect.logging.LogEavesdropper``), in Prefect's
import style (``prefect`` -> ``daskflow``)."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from daskflow import flow, get_run_logger, task
from daskflow.logging import LogEavesdropper
from daskflow.task_runners import ThreadPoolTaskRunner


def test_collects_a_logger_and_its_children_inside_the_block_only():
    target = logging.getLogger("eavesdropped")
    target.setLevel(logging.ERROR)
    with LogEavesdropper("eavesdropped", level=logging.INFO) as eavesdropper:
        assert target.level == logging.INFO
        logging.getLogger("eavesdropped").info("Hello, %s!", "world")
        logging.getLogger("eavesdropped.child_module").warning("Another one!")
        logging.getLogger("elsewhere").warning("not this one")
        logging.getLogger("eavesdropped").debug("below the level")
    logging.getLogger("eavesdropped").error("after the block")
    assert eavesdropper.text() == "[INFO]: Hello, world!\n[WARNING]: Another one!"
    assert target.level == logging.ERROR and eavesdropper not in target.handlers


@task
def shout(n: int) -> int:
    get_run_logger().info("task saw %d", n)
    return n


def test_listening_to_the_run_log_lines_masks_secrets():
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def noisy(token: SecretStr) -> int:
        get_run_logger().info("body uses %s", token.get_secret_value())
        return shout(2)

    with LogEavesdropper("daskflow.runs", level=logging.INFO) as eavesdropper:
        assert noisy(SecretStr("hunter2-is-my-password")) == 2
    lines = eavesdropper.text().splitlines()
    assert "[INFO]: body uses **********" in lines
    assert "[INFO]: task saw 2" in lines
    assert "hunter2" not in eavesdropper.text()
