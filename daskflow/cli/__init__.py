"""The ``daskflow`` command line: run flows, deploy and serve them on schedules,
read run history, manage the cache.

Conventions follow Dask's own CLI (click, ``-h``/``--help``, dashed option
names). Exit codes: 0 when the thing asked for succeeded (a run completed),
1 when it failed (a run failed or crashed, storage refused), 2 for bad usage.
Errors are one line naming the bad value and the fix.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import EXIT_USAGE

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Prints usage mistakes as one line (with where to find help), exit code 2."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            # Not standalone: click returns ctx.exit()'s code instead of exiting.
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            code = 0
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            code = EXIT_USAGE
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except click.Abort:
            click.echo("Aborted.", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="daskflow")
def cli() -> None:
    """daskflow: Prefect-style flows on a Dask cluster, results and history in storage."""


def _register() -> None:
    from . import cache_cmd, config_cmd, deployments_cmd, run_cmd, runs_cmd, serve_cmd, ui_cmd

    for module in (cache_cmd, config_cmd, deployments_cmd, run_cmd, runs_cmd, serve_cmd, ui_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


def main() -> None:
    """Entry point of the ``daskflow`` script."""
    cli.main(prog_name="daskflow")


_register()
