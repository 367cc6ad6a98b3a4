"""``daskflow ui``: the status page over stored run history, with no cluster running."""

from __future__ import annotations

import click

from ._common import EXIT_FAILED, CLIError, open_store, storage_option

__all__ = ["COMMANDS"]


@click.command("ui")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anyone who reaches the page can read runs and cancel them.")
@click.option("--port", type=click.IntRange(0, 65535), default=8788, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--poll", "poll_interval", type=click.FloatRange(0.25, 3600), default=2.0, show_default=True, help="Seconds between checks for new runs and for changes of a running run.")
@click.option("--show", is_flag=True, help="Open the page in a web browser.")
def ui(storage: str | None, host: str, port: int, poll_interval: float, show: bool) -> None:
    """Serve the status page over the run history in --storage.

    The page lists runs (filter by flow, state, tag, date) and shows one run's
    task runs, timeline, graph, logs, tracebacks and artifacts, updating while
    runs go on. Stop it with Ctrl-C.
    """
    from ..exceptions import StorageError
    from ..status.server import HistoryServer
    from ..storage.records import History

    history = History(open_store(storage, existing=True))
    try:
        runs = len(history.entries())  # a missing bucket or refused credentials fail here, not in the browser
    except StorageError as exc:
        raise CLIError(str(exc), EXIT_FAILED) from None
    try:
        server = HistoryServer(history, host=host, port=port, poll_interval=poll_interval)
    except OSError as exc:
        raise CLIError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port, or 0 for any free one") from None
    click.echo(f"daskflow status page for {history.store.url}: {server.url}  (Ctrl-C to stop)", err=True)
    if not runs:
        click.echo(f"No runs recorded in {history.store.url} yet; the page shows them as they appear "
                   "(--storage names the store your flows write to)", err=True)
    if show:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


COMMANDS = [ui]
