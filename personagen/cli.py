"""The `personagen` command: a thin layer over the Python API.

Every subcommand takes the common flags (`--config`, `--set`, `--seed`, `-v`) and, where it
writes something, `--out`. Errors print one line and exit non-zero; `-v` adds the traceback.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from personagen import __version__
from personagen.config import Config, load_config
from personagen.errors import PersonagenError
from personagen.logs import mask_secrets, setup_logging

EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


class _Group(click.Group):
    """Lists commands in the order they were added, and turns exceptions into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            _report(exc)


def _report(exc: BaseException) -> None:
    verbose = _verbose_requested()
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    kind = "error" if isinstance(exc, PersonagenError) else f"error ({type(exc).__name__})"
    message = mask_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    hint = "" if verbose or isinstance(exc, PersonagenError) else " (run with -v for the traceback)"
    click.echo(f"{kind}: {message}{hint}", err=True)
    sys.exit(EXIT_USER_ERROR if isinstance(exc, PersonagenError) else EXIT_FAILURE)


def _verbose_requested() -> bool:
    return any(arg in ("-v", "--verbose") for arg in sys.argv[1:])


def common_options(
    *, out: bool = False, out_required: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Adds --config/--set/--seed/-v (and --out) and hands the command a loaded `cfg`."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(
            config: str | None,
            overrides: tuple[str, ...],
            seed: int | None,
            verbose: bool,
            **kwargs: Any,
        ) -> Any:
            setup_logging(verbose)
            cfg = load_config(config, overrides, seed)
            return func(cfg=cfg, **kwargs)

        options = [
            click.option(
                "--config",
                "config",
                type=click.Path(dir_okay=False),
                help="YAML configuration file.",
            ),
            click.option(
                "--set",
                "overrides",
                multiple=True,
                metavar="KEY=VALUE",
                help="Override one config key (repeatable), e.g. llm.concurrency=64.",
            ),
            click.option(
                "--seed",
                type=int,
                default=None,
                help="Seed of every random choice (config key `seed`).",
            ),
            click.option(
                "-v", "--verbose", is_flag=True, help="Debug logging; tracebacks on errors."
            ),
        ]
        if out:
            options.append(
                click.option(
                    "--out",
                    "out",
                    type=click.Path(file_okay=False),
                    required=out_required,
                    help="Output folder.",
                )
            )
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "--version", prog_name="personagen")
def cli() -> None:
    """Build population-aligned persona banks for LLM-based social simulation."""


# ----------------------------------------------------------------------------------- config


@cli.group("config", cls=_Group)
def config_group() -> None:
    """Show the effective configuration (secrets masked)."""


@config_group.command("show")
@common_options()
def config_show(cfg: Config) -> None:
    """Print the effective configuration as YAML, secrets masked."""
    import yaml

    click.echo(yaml.safe_dump(cfg.masked(), sort_keys=False), nl=False)


# ----------------------------------------------------------------------------------- ingest


@cli.command("ingest")
@click.argument("src", type=click.Path(exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "blogs-xml", "jsonl", "parquet"]),
    default=None,
    help="Input format (default: config ingest.format, auto-detected by extension).",
)
@common_options(out=True, out_required=True)
def ingest_command(cfg: Config, src: str, fmt: str | None, out: str) -> None:
    """Clean, redact and window user histories into a histories Parquet dataset."""
    from personagen.ingest import SUMMARY_ROWS, ingest
    from personagen.summary import print_counts

    summary = ingest(src, out, cfg, fmt)
    print_counts(f"ingest: {src} -> {out}", summary.counts, SUMMARY_ROWS, summary.wall_s)
    if summary.errors:
        click.echo(f"{len(summary.errors)} problems recorded in {Path(out) / 'errors.jsonl'}")


# ------------------------------------------------------------------------------ embed / index


@cli.command("embed")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--retry-failed", is_flag=True, help="Retry personas whose embedding failed before.")
@click.option("--replace", is_flag=True, help="Drop existing embeddings (and index); embed all.")
@common_options()
def embed_command(cfg: Config, bank: str, retry_failed: bool, replace: bool) -> None:
    """Embed persona narratives into the bank (resumable; model from embed.model)."""
    from personagen.adapt.embed import SUMMARY_ROWS, embed_bank
    from personagen.summary import print_counts

    summary = embed_bank(bank, cfg, retry_failed=retry_failed, replace=replace)
    print_counts(
        f"embed: {bank} ({summary.model['model_id']})", summary.counts, SUMMARY_ROWS, summary.wall_s
    )


@cli.command("index")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--type",
    "kind",
    type=click.Choice(["auto", "flat", "hnsw", "ivfpq"]),
    default=None,
    help="Index type (default: config index.type; auto picks by bank size).",
)
@common_options()
def index_command(cfg: Config, bank: str, kind: str | None) -> None:
    """Build the FAISS index of the bank's embeddings (BANK/index)."""
    from personagen.adapt.index import build_index

    if kind is not None:
        cfg.index.type = kind
    info = build_index(bank, cfg)
    print_info(f"index: {bank}", info)


@cli.command("search")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.argument("query", nargs=-1, required=True)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Personas per query."
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="COND",
    help="Filter (repeatable, ANDed): kept=true, attributes.gender=female, "
    "attributes.location~japan|korea, openness>=3.5.",
)
@click.option("--width", type=int, default=80, show_default=True, help="Narrative snippet length.")
@common_options()
def search_command(
    cfg: Config, bank: str, query: tuple[str, ...], k: int, where: tuple[str, ...], width: int
) -> None:
    """Find the personas closest to a text query, with attribute filters."""
    from rich.console import Console
    from rich.table import Table

    from personagen.adapt.index import search

    text = " ".join(query)
    results = search(bank, text, k, filters=list(where), columns=["narrative"], cfg=cfg)
    table = Table(title=f"{text!r}: {results.num_rows} personas", title_justify="left")
    for name, justify in (("rank", "right"), ("persona_id", "left"), ("score", "right")):
        table.add_column(name, justify=justify)
    table.add_column("narrative")
    for row in results.to_pylist():
        snippet = " ".join((row["narrative"] or "").split())
        if len(snippet) > width:
            snippet = snippet[: width - 1] + "…"
        table.add_row(str(row["rank"]), row["persona_id"], f"{row['score']:.3f}", snippet)
    Console().print(table)


def print_info(title: str, info: dict[str, Any]) -> None:
    """A two-column table of an info mapping (nested mappings flattened with dots)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in _flatten(info):
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def main() -> None:
    cli(prog_name="personagen")
