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
    cls=_Group,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "terminal_width": 104,
        "max_content_width": 104,
    },
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


# ------------------------------------------------------------------------------------- mine


@cli.command("mine")
@click.argument("histories", type=click.Path(exists=True))
@click.option(
    "--judge/--no-judge",
    "judge",
    default=None,
    help="Judge new personas in the same run (default: config mine.judge).",
)
@common_options(out=True, out_required=True)
def mine_command(cfg: Config, histories: str, judge: bool | None, out: str) -> None:
    """Mine narrative personas from histories into a persona bank (resumable)."""
    from personagen.llm.runs import print_summary
    from personagen.mine import mine

    summary = mine(histories, out, cfg, judge)
    print_summary(f"mine: {histories} -> {out}", summary)


# ------------------------------------------------------------------------------------ judge


@cli.command("judge")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--histories",
    type=click.Path(exists=True),
    default=None,
    help="Histories the bank was mined from (default: as recorded in its manifest).",
)
@common_options()
def judge_command(cfg: Config, bank: str, histories: str | None) -> None:
    """Judge personas against their posts; flag low quality and near-duplicates."""
    from personagen.judge import judge
    from personagen.llm.runs import print_summary

    summary = judge(bank, cfg, histories)
    print_summary(f"judge: {bank}", summary)


# ------------------------------------------------------------------------------------ score


@cli.command("score")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--instrument",
    default=None,
    help="ipip-50, ipip-neo-120, ipip-neo-300 or a YAML/JSON file (default: score.instrument).",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "logprob", "text", "batch"]),
    default=None,
    help="How personas answer (default: score.mode; auto = logprob where supported).",
)
@click.option(
    "--check-consistency/--no-check-consistency",
    "consistency",
    default=None,
    help="Check extreme traits against the narratives afterwards (default: score.consistency).",
)
@common_options()
def score_command(
    cfg: Config, bank: str, instrument: str | None, mode: str | None, consistency: bool | None
) -> None:
    """Personas answer a Big Five inventory as themselves; traits and flags (resumable)."""
    from personagen.llm.runs import print_summary
    from personagen.score import score

    summary = score(bank, cfg, instrument, mode, consistency)
    print_summary(f"score: {bank}", summary)


@cli.command("consistency")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@common_options()
def consistency_command(cfg: Config, bank: str) -> None:
    """Check extreme trait scores against the narratives (judge LLM); flag contradictions."""
    from personagen.consistency import check_consistency
    from personagen.llm.runs import print_summary

    summary = check_consistency(bank, cfg)
    print_summary(f"consistency: {bank}", summary)


# ------------------------------------------------------------------------------ reliability


@cli.command("reliability")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--instrument",
    default=None,
    help="Instrument id or YAML/JSON file (default: the one the bank was scored with).",
)
@click.option(
    "--human",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Human IPIP-50 responses (BIG5 data.csv or an IPIP-FFM file) for reference correlations.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the JSON report (default: BANK/reliability.json).",
)
@common_options()
def reliability_command(
    cfg: Config, bank: str, instrument: str | None, human: str | None, json_path: str | None
) -> None:
    """Reliability of a scored bank: Cronbach's alpha, item-total and trait correlations."""
    import json

    from personagen.psychometrics.instruments import get_instrument
    from personagen.psychometrics.reliability import (
        human_correlations,
        print_reliability,
        reliability_report,
        to_json,
    )

    report = reliability_report(
        bank,
        get_instrument(instrument) if instrument else None,
        human_correlations(human) if human else None,
    )
    print_reliability(report)
    path = Path(json_path) if json_path else Path(bank) / "reliability.json"
    path.write_text(json.dumps(to_json(report), indent=2), encoding="utf-8")
    click.echo(f"report written to {path}")


# ------------------------------------------------------------------------------------ build


@cli.command("build")
@click.option(
    "--input",
    "src",
    type=click.Path(exists=True),
    default=None,
    help="Histories to build from (default: config build.input).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count the requests and prompt tokens the build would send per stage (and the cost).",
)
@common_options(out=True, out_required=True)
def build_command(cfg: Config, src: str | None, dry_run: bool, out: str) -> None:
    """The whole job on Ray: ingest, mine, judge, score, embed, index, align."""
    from personagen.summary import print_counts

    if dry_run:
        from personagen.estimate import estimate, print_estimate

        print_estimate(estimate(cfg, out, src))
        return
    from personagen.build import build, summary_rows

    summary = build(cfg, out, src)
    print_counts(f"build: {out}", summary.counts, summary_rows(summary), summary.wall_s)
    for name, value in summary.outputs.items():
        if name != "index":
            click.echo(f"{name}: {value}")


# ------------------------------------------------------------------------------------- demo


@cli.command("demo")
@common_options(out=True)
def demo_command(cfg: Config, out: str | None) -> None:
    """The whole build offline: embedded LLM and embedder, example histories."""
    from personagen.build import summary_rows
    from personagen.demo import run_demo
    from personagen.summary import print_counts

    bank = Path(out or "personagen-demo").resolve()
    summary = run_demo(cfg, bank)
    print_counts("demo", summary.counts, summary_rows(summary), summary.wall_s)
    aligned = Path(summary.outputs["aligned"])
    click.echo(f"persona bank:      {bank}  (personagen.io.bank.read_bank)")
    click.echo(f'FAISS index:       {bank / "index"}  (personagen search {bank} "...")')
    click.echo(
        f"aligned personas:  {aligned / 'personas.parquet'} ({summary.outputs['align_method']})"
    )
    click.echo(f"report:            {aligned / 'report.html'}  (open it in a browser)")
    click.echo(f"manifest:          {bank / 'manifest.json'}")


# -------------------------------------------------------------------------------- reference


def _group_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--group / --countries: narrow a reference to an M49 region or to listed countries."""
    func = click.option(
        "--countries",
        default=None,
        metavar="JP,KR",
        help="Only these ISO-2 countries (comma-separated).",
    )(func)
    return click.option(
        "--group",
        default=None,
        metavar="REGION",
        help="Only this UN M49 region, e.g. east-asia (see `personagen reference regions`).",
    )(func)


def _countries(value: str | None) -> list[str] | None:
    return [c for c in value.split(",") if c.strip()] if value else None


@cli.group("reference", cls=_Group)
def reference_group() -> None:
    """Human reference distributions: inspect one, list the regions, rebuild the builtin."""


@reference_group.command("show")
@click.argument("spec")
@_group_options
@common_options()
def reference_show(cfg: Config, spec: str, group: str | None, countries: str | None) -> None:
    """Rows, cleaning counts, trait means/SDs and correlations of a reference."""
    from personagen.evaluate.tables import print_reference
    from personagen.io.reference import configured_reference

    print_reference(configured_reference(spec, cfg, group=group, countries=_countries(countries)))


@reference_group.command("regions")
@common_options()
def reference_regions(cfg: Config) -> None:
    """The country -> UN M49 region table, with the builtin summaries' respondents."""
    from personagen.evaluate.tables import print_regions
    from personagen.io.builtin import builtin_groups
    from personagen.io.regions import region_rows

    print_regions(region_rows(), builtin_groups())


@reference_group.command("build-builtin")
@click.option(
    "--source",
    required=True,
    metavar="SPEC",
    help="Respondent-level reference to summarise, e.g. big5:PATH/big5-2012/data.csv",
)
@click.option(
    "--min-respondents",
    type=int,
    default=None,
    help="Groups with fewer respondents are withheld (default 150).",
)
@common_options(out=True)
def reference_build_builtin(
    cfg: Config, source: str, min_respondents: int | None, out: str | None
) -> None:
    """Regenerate the builtin reference summaries (default: the file shipped in the package)."""
    from personagen.io.builtin import (
        BUILTIN_PATH,
        MIN_RESPONDENTS,
        build_builtin,
        describe_build,
    )

    target = Path(out) / BUILTIN_PATH.name if out else BUILTIN_PATH
    document = build_builtin(
        source, target, min_respondents=min_respondents or MIN_RESPONDENTS, seed=cfg.seed
    )
    click.echo(f"wrote {target}: {describe_build(document)}")


# --------------------------------------------------------------------------------- evaluate


@cli.command("evaluate")
@click.option(
    "--personas", required=True, metavar="P", help="Bank folder or Parquet file with traits."
)
@click.option(
    "--reference",
    "reference",
    required=True,
    metavar="R",
    help="Trait table, big5:PATH, ipip-ffm:PATH, spi:PATH or builtin:<group>.",
)
@click.option(
    "--before", default=None, metavar="P0", help="The persona set before alignment, to compare."
)
@_group_options
@common_options(out=True)
def evaluate_command(
    cfg: Config,
    personas: str,
    reference: str,
    before: str | None,
    group: str | None,
    countries: str | None,
    out: str | None,
) -> None:
    """Distances of a persona set from a human reference, as multiples of the noise floor."""
    from personagen.evaluate.run import evaluate
    from personagen.evaluate.tables import print_metrics

    report, paths = evaluate(
        personas,
        reference,
        cfg,
        group=group,
        countries=_countries(countries),
        before=before,
        out=out,
    )
    print_metrics(report)
    if paths:
        click.echo(f"report: {paths[1]} (numbers: {paths[0]})")


# ------------------------------------------------------------------------------------ align


@cli.command("align")
@click.option(
    "--personas", required=True, metavar="P", help="Bank folder or Parquet file with traits."
)
@click.option(
    "--reference",
    "reference",
    required=True,
    metavar="R",
    help="Trait table, big5:PATH, ipip-ffm:PATH, spi:PATH or builtin:<group>.",
)
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Personas to choose.")
@click.option(
    "--method",
    type=click.Choice(["auto", "is", "ot", "is+ot"]),
    default=None,
    help="Resampling method (default: config align.method = auto).",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="Ray shards of the personas (default: one per CPU; small inputs run in-process).",
)
@click.option("--replace", is_flag=True, help="Allow a persona to be chosen more than once.")
@click.option(
    "--also",
    default=None,
    metavar="age,gender",
    help="Align these demographic columns jointly with the traits.",
)
@click.option(
    "--exclude-flagged", is_flag=True, help="Leave out personas with non-empty score_flags."
)
@_group_options
@common_options(out=True, out_required=True)
def align_command(
    cfg: Config,
    personas: str,
    reference: str,
    n: int,
    method: str | None,
    shards: int | None,
    replace: bool,
    also: str | None,
    exclude_flagged: bool,
    group: str | None,
    countries: str | None,
    out: str,
) -> None:
    """Choose N personas whose trait distribution matches the human reference."""
    from personagen.align.run import SUMMARY_ROWS, describe, run_align
    from personagen.summary import print_counts

    summary = run_align(
        personas,
        reference,
        n,
        out,
        cfg,
        method=method,
        shards=shards,
        replace=replace,
        group=group,
        countries=_countries(countries),
        also=[a.strip() for a in also.split(",") if a.strip()] if also else None,
        exclude_flagged=exclude_flagged,
    )
    print_counts(f"align: {personas} -> {out}", summary.counts, SUMMARY_ROWS, summary.wall_s)
    for line in describe(summary):
        click.echo(line)


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


@cli.command("adapt")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--query", required=True, help="Who to retrieve, e.g. 'young parents in a city'.")
@click.option(
    "--reference",
    "reference",
    required=True,
    metavar="R",
    help="The group's reference: builtin:<group>, big5:PATH (with --group), a trait table...",
)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=None, help="Personas to choose (adapt.n)."
)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=None, help="Candidates to retrieve (adapt.k)."
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="COND",
    help="Filter added to adapt.filters (repeatable, ANDed), as for `search`.",
)
@click.option(
    "--revise/--no-revise",
    "revise",
    default=None,
    help="Revise candidates toward the group with the LLM (default: adapt.revise).",
)
@click.option(
    "--target",
    default=None,
    metavar="TEXT",
    help="Who to revise toward (default: the group's region or countries).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "is", "ot", "is+ot"]),
    default=None,
    help="Alignment method (default: adapt.method, else align.method).",
)
@click.option("--replace", is_flag=True, help="Allow a persona to be chosen more than once.")
@_group_options
@common_options(out=True, out_required=True)
def adapt_command(
    cfg: Config,
    bank: str,
    query: str,
    reference: str,
    n: int | None,
    k: int | None,
    where: tuple[str, ...],
    revise: bool | None,
    target: str | None,
    method: str | None,
    replace: bool,
    group: str | None,
    countries: str | None,
    out: str,
) -> None:
    """Retrieve personas for a query, revise them toward a group, re-score and re-align."""
    from personagen.adapt.adapt import SUMMARY_ROWS, adapt
    from personagen.summary import print_counts

    summary = adapt(
        bank,
        query,
        reference,
        out,
        cfg,
        n=n,
        group=group,
        countries=_countries(countries),
        k=k,
        where=where,
        revise=revise,
        target=target,
        method=method,
        replace=replace,
    )
    print_counts(f"adapt: {bank} -> {out}", summary.counts, SUMMARY_ROWS, summary.wall_s)
    for line in summary.lines():
        click.echo(line)


@cli.command("train-embedder")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace the model folder if it exists.")
@common_options(out=True, out_required=True)
def train_embedder_command(cfg: Config, bank: str, overwrite: bool, out: str) -> None:
    """Fine-tune the embedding model on LLM-written queries with mined hard negatives."""
    from personagen.adapt.train import SUMMARY_ROWS, train_embedder
    from personagen.summary import print_counts

    summary = train_embedder(bank, out, cfg, overwrite=overwrite)
    print_counts(f"train-embedder: {bank} -> {out}", summary.counts, SUMMARY_ROWS, summary.wall_s)
    for line in summary.lines():
        click.echo(line)


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
