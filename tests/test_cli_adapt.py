"""`personagen embed`, `index` and `search` end to end on a small bank (real model, Ray, FAISS)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from synthetic import persona_table

from personagen.cli import cli
from personagen.io.bank import write_group


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_embed_index_search_from_the_command_line(ray_local, tmp_path):
    bank = str(tmp_path / "bank")
    write_group(bank, "personas", persona_table(30, empty_every=15))

    missing = run("search", bank, "anyone")
    assert missing.exit_code == 2 and "run `personagen index" in missing.output

    embedded = run("embed", bank, "--set", "embed.batch_size=8")
    assert embedded.exit_code == 0, embedded.output
    assert "embedded now" in embedded.output and "28" in embedded.output

    indexed = run("index", bank)
    assert indexed.exit_code == 0, indexed.output
    assert "flat" in indexed.output and "all-MiniLM-L6-v2@" in indexed.output

    # persona 0 is the only nurse in Manila (and is female)
    found = run("search", bank, "a nurse in Manila", "-k", "3", "--where", "attributes.gender=f")
    assert found.exit_code == 0, found.output
    assert "0 personas" in found.output  # `=` is equality: no gender is "f"
    found = run(
        "search",
        bank,
        "a",
        "nurse",
        "in",
        "Manila",
        "-k",
        "3",
        "--where",
        "attributes.gender=female",
        "--where",
        "attributes.location~manila|berlin",
    )
    assert found.exit_code == 0, found.output
    lines = [line for line in found.output.splitlines() if "/0" in line]
    assert len(lines) == 3 and "u0/0" in lines[0]
    assert "Persona 0 works" in found.output

    bad = run("search", bank, "x", "--where", "attributes.height>3")
    assert bad.exit_code == 2 and "no field 'height'" in bad.output
