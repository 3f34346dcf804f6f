"""The `personagen` command: parses flags, folds them into the configuration, calls a command.

Every subcommand takes the common flags (`--config`, `--set`, `--seed`, `-v`) and, where it
writes something, `--out`. A flag that stands for a config key is folded into the configuration
with `Config.updated` (the one way a flag reaches a command); the command then runs on the
configuration alone (`personagen.commands`), and what it returns is drawn by
`personagen.commands.render`. Errors print one line and exit non-zero; `-v` adds the traceback.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import click

from personagen import __version__
from personagen.align.options import AlignMethod
from personagen.commands import render
from personagen.config import Config, ScoreConfig, load_config
from personagen.errors import PersonagenError
from personagen.exports import FORMATS
from personagen.io.lock import release_all
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
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                exc.show()  # a group without a command: its help
                sys.exit(EXIT_USER_ERROR)
            # one line, as for every other error: the problem, then where the usage is
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see `{exc.ctx.command_path} -h`)"
            click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            _report(exc)
        finally:
            release_all()  # the command has ended, however: its banks are free


def _report(exc: BaseException) -> None:
    verbose = _verbose_requested()
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    kind = "error" if isinstance(exc, PersonagenError) else f"error ({type(exc).__name__})"
    message = mask_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
    hint = "" if verbose or isinstance(exc, PersonagenError) else " (run with -v for the traceback)"
    click.echo(f"{kind}: {message}{hint}", err=True)
    sys.exit(exc.exit_code if isinstance(exc, PersonagenError) else EXIT_FAILURE)


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


def _list(value: str | None) -> list[str] | None:
    """A comma-separated flag value as a list (None when the flag was not given)."""
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


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
    from personagen.commands.ingest import ingest

    summary = ingest(cfg.updated({"ingest.format": fmt}), src, out)
    render.print_summary(f"ingest: {src} -> {out}", summary)


# ------------------------------------------------------------------------------------- mine


@cli.command("mine")
@click.argument("histories", type=click.Path(exists=True))
@click.option(
    "--judge/--no-judge",
    "judge",
    default=None,
    help="Judge new personas in the same run (default: config mine.judge).",
)
@click.option("--replace", is_flag=True, help="Start the bank over (drop what it holds).")
@common_options(out=True, out_required=True)
def mine_command(cfg: Config, histories: str, judge: bool | None, replace: bool, out: str) -> None:
    """Mine narrative personas from histories into a persona bank (resumable)."""
    from personagen.commands.mine import mine

    summary = mine(cfg.updated({"mine.judge": judge}), histories, out, replace=replace)
    render.print_summary(f"mine: {histories} -> {out}", summary)


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
    from personagen.commands.judge import judge

    render.print_summary(f"judge: {bank}", judge(cfg, bank, histories))


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
    type=click.Choice(get_args(ScoreConfig.model_fields["mode"].annotation)),
    default=None,
    help="How personas answer (default: score.mode; auto = logprob where supported; calibrated "
    "= logprob with each item's content-free prior divided out; embedding = zero-shot from "
    "the narrative's embedding, no LLM).",
)
@click.option(
    "--surrogate",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    metavar="FRACTION",
    help="LLM-score only this random fraction (at least 10 personas) and predict the others' "
    "traits from their embeddings, with 90% intervals; reports the held-out agreement.",
)
@click.option(
    "--check-consistency/--no-check-consistency",
    "consistency",
    default=None,
    help="Check extreme traits against the narratives afterwards (default: score.consistency).",
)
@click.option("--replace", is_flag=True, help="Drop the bank's scores and score every persona.")
@common_options()
def score_command(
    cfg: Config,
    bank: str,
    instrument: str | None,
    mode: str | None,
    surrogate: float | None,
    consistency: bool | None,
    replace: bool,
) -> None:
    """Personas answer a Big Five inventory as themselves; traits and flags (resumable)."""
    from personagen.commands.score import score

    cfg = cfg.updated(
        {"score.instrument": instrument, "score.mode": mode, "score.consistency": consistency}
    )
    summary = score(cfg, bank, replace=replace, surrogate=surrogate)
    render.print_summary(f"score: {bank}", summary)


@cli.command("consistency")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@common_options()
def consistency_command(cfg: Config, bank: str) -> None:
    """Check extreme trait scores against the narratives (judge LLM); flag contradictions."""
    from personagen.commands.consistency import check_consistency

    render.print_summary(f"consistency: {bank}", check_consistency(cfg, bank))


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
    from personagen.commands.reliability import reliability_report, write_report
    from personagen.psychometrics.instruments import get_instrument
    from personagen.psychometrics.reliability import human_correlations

    report = reliability_report(
        bank,
        get_instrument(instrument) if instrument else None,
        human_correlations(human) if human else None,
    )
    render.print_reliability(report)
    path = write_report(report, Path(json_path) if json_path else Path(bank) / "reliability.json")
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
@click.option("--replace", is_flag=True, help="Start the bank over (drop what it holds).")
@common_options(out=True, out_required=True)
def build_command(cfg: Config, src: str | None, dry_run: bool, replace: bool, out: str) -> None:
    """The whole job on Ray: ingest, mine, judge, score, embed, index, align."""
    cfg = cfg.updated({"build.input": src})
    if dry_run:
        from personagen.commands.estimate import estimate

        render.print_estimate(estimate(cfg, out))
        return
    from personagen.commands.build import build

    render.print_summary(f"build: {out}", build(cfg, out, replace=replace))


# ------------------------------------------------------------------------------------- demo


@cli.command("demo")
@common_options(out=True)
def demo_command(cfg: Config, out: str | None) -> None:
    """The whole build offline: embedded LLM and embedder, example histories."""
    from personagen.commands.demo import demo

    render.print_summary("demo", demo(cfg, Path(out or "personagen-demo")))


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


_instrument_option = click.option(
    "--instrument",
    default=None,
    help="Whose traits: a bank scored with several instruments needs one (its id).",
)


def _set_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--personas / --reference / --instrument: the persona set, the instrument whose traits
    are used, and the human reference they are measured by."""
    func = _instrument_option(func)
    func = click.option(
        "--reference",
        "reference",
        required=True,
        metavar="R",
        help="Trait table, big5:PATH, ipip-ffm:PATH, spi:PATH or builtin:<group>.",
    )(func)
    return click.option(
        "--personas", required=True, metavar="P", help="Bank folder or Parquet file with traits."
    )(func)


_repeats_option = click.option(
    "--replace",
    is_flag=True,
    default=None,
    help="Allow a persona to be chosen more than once (align.replace).",
)


@cli.group("reference", cls=_Group)
def reference_group() -> None:
    """Human reference distributions: inspect one, list the regions, rebuild the builtin."""


@reference_group.command("show")
@click.argument("spec")
@_group_options
@common_options()
def reference_show(cfg: Config, spec: str, group: str | None, countries: str | None) -> None:
    """Rows, cleaning counts, trait means/SDs and correlations of a reference."""
    from personagen.commands.reference import load

    render.print_reference(load(cfg, spec, group=group, countries=_list(countries)))


@reference_group.command("regions")
@common_options()
def reference_regions(cfg: Config) -> None:
    """The country -> UN M49 region table, with the builtin summaries' respondents."""
    from personagen.io.builtin import builtin_groups
    from personagen.io.regions import region_rows

    render.print_regions(region_rows(), builtin_groups())


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
    from personagen.commands.reference import build_builtin
    from personagen.io.builtin import BUILTIN_PATH, MIN_RESPONDENTS, describe_build

    target = Path(out) / BUILTIN_PATH.name if out else BUILTIN_PATH
    document = build_builtin(
        cfg, source, target, min_respondents=min_respondents or MIN_RESPONDENTS
    )
    click.echo(f"wrote {target}: {describe_build(document)}")


# --------------------------------------------------------------------------------- evaluate


@cli.command("evaluate")
@_set_options
@click.option(
    "--before", default=None, metavar="P0", help="The persona set before alignment, to compare."
)
@_group_options
@common_options(out=True)
def evaluate_command(
    cfg: Config,
    personas: str,
    reference: str,
    instrument: str | None,
    before: str | None,
    group: str | None,
    countries: str | None,
    out: str | None,
) -> None:
    """Distances of a persona set from a human reference, as multiples of the noise floor."""
    from personagen.commands.evaluate import evaluate
    from personagen.commands.reference import load
    from personagen.io.personas import read_personas

    ref = load(cfg, reference, group=group, countries=_list(countries))
    earlier = read_personas(before, instrument=instrument) if before else None
    chosen = read_personas(personas, instrument=instrument)
    report, paths = evaluate(cfg, chosen, ref, before=earlier, out=out)
    render.print_metrics(report)
    if paths:
        click.echo(f"report: {paths[1]} (numbers: {paths[0]})")


# ------------------------------------------------------------------------------------ align


@cli.command("align")
@_set_options
@click.option("--n", "n", required=True, type=click.IntRange(min=1), help="Personas to choose.")
@click.option(
    "--method",
    type=click.Choice(get_args(AlignMethod)),
    default=None,
    help="Resampling method (default: config align.method = auto).",
)
@click.option(
    "--shards",
    type=click.IntRange(min=1),
    default=None,
    help="Ray shards of the personas (default: one per CPU; small inputs run in-process).",
)
@_repeats_option
@click.option(
    "--also",
    default=None,
    metavar="age,gender",
    help="Align these demographic columns jointly with the traits.",
)
@click.option(
    "--exclude-flagged",
    is_flag=True,
    default=None,
    help="Leave out personas with non-empty score_flags.",
)
@_group_options
@common_options(out=True, out_required=True)
def align_command(
    cfg: Config,
    personas: str,
    reference: str,
    instrument: str | None,
    n: int,
    method: str | None,
    shards: int | None,
    replace: bool | None,
    also: str | None,
    exclude_flagged: bool | None,
    group: str | None,
    countries: str | None,
    out: str,
) -> None:
    """Choose N personas whose trait distribution matches the human reference."""
    from personagen.commands.align import align
    from personagen.commands.reference import load
    from personagen.io.personas import read_personas

    cfg = cfg.updated(
        {
            "align.method": method,
            "align.shards": shards,
            "align.replace": replace,
            "align.also": _list(also),
            "align.exclude_flagged": exclude_flagged,
        }
    )
    ref = load(cfg, reference, group=group, countries=_list(countries))
    summary = align(cfg, read_personas(personas, instrument=instrument), ref, n, out)
    render.print_summary(f"align: {personas} -> {out}", summary)


# ------------------------------------------------------------------------------ embed / index


@cli.command("embed")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--retry-failed", is_flag=True, help="Retry personas whose embedding failed before.")
@click.option("--replace", is_flag=True, help="Drop existing embeddings (and index); embed all.")
@common_options()
def embed_command(cfg: Config, bank: str, retry_failed: bool, replace: bool) -> None:
    """Embed persona narratives into the bank (resumable; model from embed.model)."""
    from personagen.commands.embed import embed

    summary = embed(cfg, bank, retry_failed=retry_failed, replace=replace)
    render.print_summary(f"embed: {bank} ({summary.outputs['model']['model_id']})", summary)


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
    from personagen.commands.index import index

    render.print_info(f"index: {bank}", index(cfg.updated({"index.type": kind}), bank))


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
    from personagen.commands.index import search_bank

    text = " ".join(query)
    results = search_bank(cfg, bank, text, k, list(where), ["narrative"])
    render.print_search(f"{text!r}: {results.num_rows} personas", results, width)


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
    type=click.Choice(get_args(AlignMethod)),
    default=None,
    help="Alignment method (default: adapt.method, else align.method).",
)
@_repeats_option
@click.option("--overwrite", is_flag=True, help="Start an earlier adaptation in --out over.")
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
    replace: bool | None,
    overwrite: bool,
    group: str | None,
    countries: str | None,
    out: str,
) -> None:
    """Retrieve personas for a query, revise them toward a group, re-score and re-align."""
    from personagen.commands.adapt import adapt
    from personagen.commands.reference import load

    cfg = cfg.updated(
        {
            "adapt.n": n,
            "adapt.k": k,
            "adapt.filters": [*cfg.adapt.filters, *where] if where else None,
            "adapt.revise": revise,
            "adapt.target": target,
            "adapt.method": method,
            "align.replace": replace,
        }
    )
    ref = load(cfg, reference, group=group, countries=_list(countries))
    summary = adapt(cfg, bank, query, ref, out, overwrite=overwrite)
    render.print_summary(f"adapt: {bank} -> {out}", summary)


@cli.command("train-embedder")
@click.argument("bank", type=click.Path(exists=True, file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace the model folder if it exists.")
@common_options(out=True, out_required=True)
def train_embedder_command(cfg: Config, bank: str, overwrite: bool, out: str) -> None:
    """Fine-tune the embedding model on LLM-written queries with mined hard negatives."""
    from personagen.commands.train_embedder import train_embedder

    summary = train_embedder(cfg, bank, out, overwrite=overwrite)
    render.print_summary(f"train-embedder: {bank} -> {out}", summary)


# ----------------------------------------------------------------------------------- export


@cli.command("export")
@click.argument("personas", metavar="SET", type=click.Path(exists=True))
@click.option(
    "--to",
    "fmt",
    required=True,
    type=click.Choice(FORMATS),
    help="oasis (OASIS agent profiles), concordia (Concordia players), hf (datasets folder "
    "with a dataset card), jsonl or csv (one persona per row).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(),
    help="What to write: a file (concordia, jsonl, csv) or a folder (oasis, hf).",
)
@_instrument_option
@click.option(
    "--license",
    "license_id",
    default=None,
    metavar="ID",
    help="Licence of an hf export, a Hub id such as cc-by-4.0 (default: the source corpus's).",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@common_options()
def export_command(
    cfg: Config,
    personas: str,
    fmt: str,
    out: str,
    instrument: str | None,
    license_id: str | None,
    overwrite: bool,
) -> None:
    """Export a bank, aligned or adapted set for simulators (OASIS, Concordia) or the Hub."""
    from personagen.commands.export import export

    summary = export(
        personas, fmt, out, instrument=instrument, overwrite=overwrite, license=license_id
    )
    render.print_summary(f"export: {personas} -> {out}", summary)


# ----------------------------------------------------------------------------------- import


@cli.command("import")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "personahub", "nemotron", "generic"]),
    default="auto",
    show_default=True,
    help="Schema of SRC (auto: told by its columns). JSONL, CSV or Parquet by extension.",
)
@click.option(
    "--text-column",
    "text_columns",
    multiple=True,
    metavar="COLUMN",
    help="Persona text (repeatable: joined with blank lines; default per format).",
)
@click.option(
    "--attribute-column",
    "attribute_columns",
    multiple=True,
    metavar="[FIELD=]COLUMN",
    help="A column of attributes.FIELD: age_range, gender, occupation, location, interests, "
    "values (repeatable; default: age, sex/gender, occupation, city/state/region/country, ...).",
)
@click.option(
    "--id-column",
    default=None,
    metavar="COLUMN",
    help="The set's own ids (default: uuid, persona_id or id where present, else row numbers; "
    "'' = row numbers).",
)
@click.option("--name", default=None, help="Prefix of the persona ids (default: SRC's file stem).")
@click.option("--replace", is_flag=True, help="Start the bank over (drop what it holds).")
@common_options(out=True, out_required=True)
def import_command(
    cfg: Config,
    src: str,
    fmt: str,
    text_columns: tuple[str, ...],
    attribute_columns: tuple[str, ...],
    id_column: str | None,
    name: str | None,
    replace: bool,
    out: str,
) -> None:
    """Import a persona set (PersonaHub, Nemotron-Personas, JSONL/CSV/Parquet) as a bank."""
    from personagen.commands.import_set import import_set

    summary = import_set(
        cfg,
        src,
        out,
        fmt=fmt,
        text_columns=text_columns,
        attribute_columns=attribute_columns,
        id_column=id_column,
        name=name,
        replace=replace,
    )
    render.print_summary(f"import: {src} -> {out}", summary)


# --------------------------------------------------------------------------------- baseline


@cli.command("baseline")
@click.option(
    "--kind",
    type=click.Choice(["llm-personas", "no-persona", "random"]),
    required=True,
    help="llm-personas: the LLM writes personas from nothing; no-persona: the bare model "
    "answers the inventory; random: personas drawn from --from.",
)
@click.option("--n", type=int, required=True, help="Personas (respondents) in the set.")
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The bank a random set is drawn from.",
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="Sampling temperature of the written personas or bare answers (baseline.temperature).",
)
@click.option(
    "--instrument",
    default=None,
    help="no-persona: the inventory the bare model answers (default: score.instrument).",
)
@click.option("--replace", is_flag=True, help="Start the bank over (drop what it holds).")
@common_options(out=True, out_required=True)
def baseline_command(
    cfg: Config,
    kind: str,
    n: int,
    source: str | None,
    temperature: float | None,
    instrument: str | None,
    replace: bool,
    out: str,
) -> None:
    """A set to compare with: LLM-written personas, the bare model, or a random draw."""
    from personagen.commands.baseline import baseline

    cfg = cfg.updated({"baseline.temperature": temperature, "score.instrument": instrument})
    summary = baseline(cfg, kind, n, out, source=source, replace=replace)
    render.print_summary(f"baseline {kind}: {out}", summary)


# ------------------------------------------------------------------------------- experiment


@cli.command("experiment")
@click.argument("experiment_file", type=click.Path(exists=True, dir_okay=False))
@common_options(out=True, out_required=True)
def experiment_command(cfg: Config, experiment_file: str, out: str) -> None:
    """The comparison table: persona sets x references x noise floor, held-out instrument.

    EXPERIMENT_FILE (YAML) names the banks (built, baselines, imported or existing), the sets
    drawn from them (all, random, aligned, adapted), the references, the held-out instrument
    and the baseline set; see examples/experiment.yaml and the README section "Reproducing the
    paper's comparison".
    """
    from personagen.commands.experiment import experiment

    summary = experiment(cfg, experiment_file, out)
    render.print_comparison(summary.outputs["report"])
    render.print_summary(f"experiment: {experiment_file} -> {out}", summary)


# -------------------------------------------------------------------------- validate-scorer


@cli.command("validate-scorer")
@click.option(
    "--instrument",
    default=None,
    help="ipip-50, ipip-neo-120, ipip-neo-300 or a YAML/JSON file (default: score.instrument).",
)
@click.option(
    "--mode",
    type=click.Choice(get_args(ScoreConfig.model_fields["mode"].annotation)),
    default=None,
    help="How personas answer (default: score.mode).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=3),
    default=None,
    help="Only the first N known-answer personas (or users of --histories): a quicker check.",
)
@click.option(
    "--histories",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSONL of users' posts with their self-reported Big Five: mine, score and correlate "
    "persona traits with the self-reports instead.",
)
@click.option("--replace", is_flag=True, help="Start --out over (the response cache stays).")
@common_options(out=True)
def validate_scorer_command(
    cfg: Config,
    instrument: str | None,
    mode: str | None,
    limit: int | None,
    histories: str | None,
    replace: bool,
    out: str | None,
) -> None:
    """Does the scorer measure anything? Known-answer personas or self-reports vs scores."""
    from personagen.commands.validate_scorer import validate_histories, validate_scorer

    cfg = cfg.updated({"score.instrument": instrument, "score.mode": mode})
    if histories is None:
        target = Path(out or "personagen-validate")
        summary = validate_scorer(cfg, target, limit=limit, replace=replace)
    else:
        target = Path(out or "personagen-validate-histories")
        summary = validate_histories(cfg, histories, target, limit=limit, replace=replace)
    render.print_summary(f"validate-scorer: {target}", summary)
    render.print_validity(summary.outputs["report"])


def main() -> None:
    cli(prog_name="personagen")
