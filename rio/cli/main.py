"""The ``rio`` command line (typer)."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from rio._version import __version__

__all__ = ["app", "main", "user_traceback", "user_traceback_text"]

app = typer.Typer(
    name="rio",
    help="rio: virtual actors for Python. Run apps and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rio {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """rio: virtual actors for Python."""


@app.command()
def run(
    target: Annotated[
        str,
        typer.Argument(help="A Python file (app.py) or module (pkg.mod), optionally :app_name."),
    ],
    script_args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Arguments for the app, in its sys.argv[1:] (put them after --: "
            "rio run app.py -- --rounds 3).",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="State storage URL, overriding the app's (e.g. sqlite:///x.db)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder for the embedded SQLite default.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes (0: every actor in this process; default: cores)."),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Join the cluster whose membership lives at this URL "
            "(redis://, postgresql://, mysql://, sqlite:///).",
            rich_help_panel="Cluster",
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="RIO_CLUSTER_SECRET",
            help="The cluster secret (default: $RIO_CLUSTER_SECRET).",
            rich_help_panel="Cluster",
            show_envvar=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address the node listens on [default: 127.0.0.1].", rich_help_panel="Cluster"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="Port it listens on (0: any free one) [default: 0].", rich_help_panel="Cluster"
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            help="host:port other nodes dial (NAT, containers).", rich_help_panel="Cluster"
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            help="The node's name, stable across restarts (default: its address).",
            rich_help_panel="Cluster",
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            help="Default placement: prefer-local, random, consistent-hash, least-loaded "
            "[default: prefer-local].",
            rich_help_panel="Cluster",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate: the node listens with TLS.", rich_help_panel="Cluster"),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Its private key (PEM).", rich_help_panel="Cluster")
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM certificates to trust when dialing nodes.", rich_help_panel="Cluster"
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="Log to stderr from this level up: TRACE, DEBUG, INFO, WARNING, ERROR "
            "(default: $RIO_LOG_LEVEL, else INFO).",
        ),
    ] = None,
) -> None:
    """Start an app: run its @app.main, or serve until SIGINT/SIGTERM, then drain.

    With --cluster it is a node of a cluster: it listens on --host:--port, joins the
    membership at the URL, and serves its share of the objects.

    Exit codes: 0 done (or stopped by a signal and drained), 1 @app.main raised,
    2 the target or an option is wrong (nothing started), 130 interrupted.
    """
    from rio.cli.loader import ImportFailed, load_app
    from rio.core.errors import ConfigError, RemoteError, RioError
    from rio.core.logs import LOG_LEVEL_ENV, configure_logging

    env_level = os.environ.get(LOG_LEVEL_ENV)
    try:
        configure_logging(log_level or env_level or "INFO")
    except RioError as e:
        where = "--log-level" if log_level else LOG_LEVEL_ENV  # where the bad value came from
        _echo_err(f"rio run: {where}: {e}\n")
        raise typer.Exit(2) from None
    sys.argv = [target, *(script_args or [])]  # what the app's own code reads
    try:
        rio_app = load_app(target)
    except ImportFailed as e:
        _echo_err(user_traceback(e.error))
        _echo_err(f"rio run: importing {e.target} failed\n")
        raise typer.Exit(2) from None
    except RioError as e:
        _echo_err(f"rio run: {e}\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    try:
        rio_app.configure(storage=storage, data_dir=data_dir)
    except RioError as e:
        _echo_err(f"rio run: --storage: {e}\n")
        raise typer.Exit(2) from None
    node_options = {
        "host": host,
        "port": port,
        "advertise": advertise,
        "node": node,
        "placement": placement,
        "tls_cert": None if tls_cert is None else str(tls_cert),
        "tls_key": None if tls_key is None else str(tls_key),
        "tls_ca": None if tls_ca is None else str(tls_ca),
    }
    given = {k: v for k, v in node_options.items() if v is not None}
    # --secret on the command line (not the environment's RIO_CLUSTER_SECRET, which a
    # box may set for every app it runs) is refused like the other node options.
    secret_given = bool(secret) and secret != os.environ.get("RIO_CLUSTER_SECRET")
    try:
        rio_app.configure(workers=workers)
        if cluster is not None or ((given or secret) and rio_app.cluster is not None):
            import msgspec

            from rio.cluster.settings import ClusterSettings

            # Each option given replaces one field of the app's own cluster settings
            # (from its code or config file), if it has any.
            base = rio_app.cluster or ClusterSettings(url=cluster or "")
            changes: dict[str, object] = dict(given)
            if cluster is not None:
                changes["url"] = cluster
            if secret:
                changes["secret"] = secret
            rio_app.configure(cluster=msgspec.structs.replace(base, **changes))
        elif given or secret_given:
            names = [*given, "secret"] if secret_given else list(given)
            flags = ", ".join("--" + k.replace("_", "-") for k in names)
            raise ConfigError(
                f"{flags} {'applies' if len(names) == 1 else 'apply'} only to a cluster "
                "node: add --cluster URL (or give the app cluster settings)"
            )
    except RioError as e:
        _echo_err(f"rio run: {e}\n")
        raise typer.Exit(2) from None
    try:
        rio_app.run()
    except RemoteError as e:  # a handler raised: its frames are the useful part
        if e.remote_traceback:
            _echo_err(user_traceback_text(e.remote_traceback))
        _echo_err(f"rio run: RemoteError: {e}\n")
        raise typer.Exit(1) from None
    except RioError as e:
        _echo_err(f"rio run: {type(e).__name__}: {e}\n")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # signals are handled by the app; this is a fallback
        raise typer.Exit(130) from None
    except Exception as e:
        _echo_err(user_traceback(e))
        raise typer.Exit(1) from None
    if rio_app.stop_problems:  # a supervisor must see that work was lost
        _echo_err(
            f"rio run: stopped without draining completely: {'; '.join(rio_app.stop_problems)}\n"
        )
        raise typer.Exit(1)


@app.command()
def status(
    cluster: Annotated[
        str, typer.Option(help="The cluster's membership URL (as given to its nodes).")
    ],
    all_members: Annotated[
        bool, typer.Option("--all", help="Also list dead and departed members.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Show a cluster's members, their state, and activations per node and type."""
    import asyncio

    import msgspec

    from rio.cli.status import cluster_status, format_status
    from rio.core.errors import RioError

    try:
        result = asyncio.run(cluster_status(cluster))
    except RioError as e:
        _echo_err(f"rio status: {e}\n")
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(msgspec.json.encode(result).decode())
    else:
        typer.echo(format_status(result, all_members=all_members), nl=False)


@app.command()
def bench(
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path",
            "-p",
            help="Run only these paths (repeatable): inproc, workers, cluster, baseline.",
        ),
    ] = None,
    workload: Annotated[
        list[str] | None,
        typer.Option("--workload", "-w", help="Run only these workloads (repeatable)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Smaller runs: the whole suite in under 60 s.")
    ] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the records as JSON to this file.")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List workloads and exit.")] = False,
    repeat: Annotated[
        int,
        typer.Option(
            help="Run the selection this many times, round after round; report each "
            "workload's median run and the spread (for noisy machines)."
        ),
    ] = 1,
) -> None:
    """Run the benchmark suite and print a table (and JSON with --json)."""
    from rio.cli.bench import run_bench

    code = run_bench(
        paths=path or [],
        workloads=workload or [],
        quick=quick,
        json_file=json_file,
        list_only=list_only,
        repeat=repeat,
    )
    raise typer.Exit(code)


# -- errors: tracebacks limited to the user's frames ----------------------------------


def _echo_err(text: str) -> None:
    typer.echo(text, err=True, nl=False)


def _hidden_dirs() -> tuple[str, ...]:
    """Folders whose frames are machinery, not the user's code."""
    import asyncio
    import importlib

    import rio

    modules: list[object] = [rio, typer, asyncio, importlib]
    for name in ("click", "uvloop"):  # only those already imported
        if name in sys.modules:
            modules.append(sys.modules[name])
    dirs = []
    for module in modules:
        file = getattr(module, "__file__", None)
        if file:
            dirs.append(os.path.join(os.path.dirname(os.path.realpath(file)), ""))
    return tuple(dirs)


def _is_user_frame(filename: str, hidden: tuple[str, ...]) -> bool:
    if filename.startswith(("<frozen ", "uvloop/")):  # uvloop's Cython frames are relative
        return False
    return not os.path.realpath(filename).startswith(hidden)


def user_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` without rio, typer, click or asyncio frames.

    Chained exceptions (``__cause__``, ``__context__``) are trimmed alike. When nothing
    is left of a stack (the fault is inside rio itself), that stack is kept whole.
    """
    hidden = _hidden_dirs()
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [te]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        kept = [f for f in t.stack if _is_user_frame(f.filename, hidden)]
        if kept:
            t.stack = traceback.StackSummary.from_list(kept)
        todo.extend(c for c in (t.__cause__, t.__context__) if c is not None)
        todo.extend(getattr(t, "exceptions", None) or [])
    return "".join(te.format())


_FRAME_LINE = re.compile(r'^  File "(?P<file>[^"]*)", line \d+')


def user_traceback_text(text: str) -> str:
    """An already formatted traceback (a :class:`rio.RemoteError`'s) without rio frames.

    A frame is its ``File "...", line N`` line and the indented lines under it. If no
    frame would be left, the text is returned as it is.
    """
    hidden = _hidden_dirs()
    out: list[str] = []
    skipping = False
    dropped = kept = 0
    for line in text.splitlines(keepends=True):
        m = _FRAME_LINE.match(line)
        if m is not None:
            skipping = not _is_user_frame(m["file"], hidden)
            dropped += skipping
            kept += not skipping
        elif not line.startswith(("    ", "  [Previous line repeated")):
            skipping = False  # a header, the exception line, a blank: not part of a frame
        if not skipping:
            out.append(line)
    if dropped and not kept:
        return text
    result = "".join(out)
    return result if result.endswith("\n") else result + "\n"


def main() -> None:
    """Entry point of the ``rio`` console script."""
    app(prog_name="rio")


if __name__ == "__main__":  # pragma: no cover
    main()
