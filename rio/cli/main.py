"""The ``rio`` command line (typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rio._version import __version__
from rio.cli.loader import load_app

__all__ = ["app", "main"]

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
    storage: Annotated[
        str | None,
        typer.Option(help="State storage URL, overriding the app's (e.g. sqlite:///x.db)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder for the embedded SQLite default.")
    ] = None,
) -> None:
    """Start an app: run its @app.main, or serve until SIGINT/SIGTERM, then drain."""
    from rio.core.errors import RioError

    try:
        rio_app = load_app(target)
    except RioError as e:
        typer.echo(f"rio run: {e}", err=True)
        raise typer.Exit(2) from None
    if storage is not None:
        rio_app.storage_spec = storage
    if data_dir is not None:
        rio_app.data_dir = data_dir
    try:
        rio_app.run()
    except RioError as e:
        typer.echo(f"rio run: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def bench(
    path: Annotated[
        list[str] | None,
        typer.Option("--path", "-p", help="Run only these paths (repeatable): inproc, baseline."),
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
) -> None:
    """Run the benchmark suite and print a table (and JSON with --json)."""
    from rio.cli.bench import run_bench

    code = run_bench(
        paths=path or [],
        workloads=workload or [],
        quick=quick,
        json_file=json_file,
        list_only=list_only,
    )
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``rio`` console script."""
    app(prog_name="rio")


if __name__ == "__main__":  # pragma: no cover
    main()
