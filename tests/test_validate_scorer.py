"""`personagen validate-scorer`: the known-answer set as documented, the validity statistics
against scipy and by hand, the command end to end against stub scorers whose answers follow
the designed levels (r = 1) or ignore them (r = 0), the real embedded model, and the
self-report mode on a small file."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter

import numpy as np
import pytest
from browser import embedded_pngs, render
from click.testing import CliRunner
from llm_test_server import LLMTestServer, instance, request_schema
from scipy.stats import spearmanr
from synthetic import stub_llm_sets

from personagen import TRAITS
from personagen.cli import cli
from personagen.commands.validate_scorer import cost, verdict
from personagen.evaluate.validity import (
    acquiescence,
    bootstrap_interval,
    cross_correlations,
    max_off_diagonal,
    mean_entropy,
    rating,
    spearman,
    validity,
)
from personagen.evaluate.validity_report import write_validity_report
from personagen.io.bank import read_group
from personagen.psychometrics.instruments import IPIP_50, IPIP_NEO_120
from personagen.psychometrics.known_answer import known_answer_set

PERSONAS, DESIGN = known_answer_set()
LEVELS = dict(zip(PERSONAS.column("narrative").to_pylist(), DESIGN.tolist(), strict=True))
ITEMS = {item.text: item for item in (*IPIP_50.items, *IPIP_NEO_120.items)}
H_75_25 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


# ------------------------------------------------------------------------ the known-answer set


def recipe() -> dict[str, list[int]]:
    """The design as `personagen.psychometrics.known_answer` documents it, by persona id. The
    details are drawn from lists of 2, 12, 50, 10 and 10 entries: `rng.choice` consumes the
    generator by a list's length only, so their indices reproduce the draws."""
    rng = random.Random(20261207)
    rows = []
    for _ in range(8):
        perms = [rng.sample(range(5), 5) for _ in range(5)]
        for a in range(5):
            for b in range(5):
                cols = [a, b, (a + b) % 5, (a + 2 * b) % 5, (a + 3 * b) % 5]
                design = [perms[j][cols[j]] + 1 for j in range(5)]
                details = [rng.choice(range(n)) for n in (2, 12, 50, 10, 10)]
                rows.append((design, details))
    rng.shuffle(rows)
    return {f"ka-{i + 1:03d}": design for i, (design, _) in enumerate(rows)}


def test_the_known_answer_set_is_balanced_uncorrelated_and_made_as_documented():
    ids = PERSONAS.column("persona_id").to_pylist()
    assert ids == [f"ka-{i:03d}" for i in range(1, 201)]
    assert DESIGN.shape == (200, 5) and DESIGN.dtype == np.int64
    for k in range(5):
        assert np.bincount(DESIGN[:, k], minlength=6)[1:].tolist() == [40] * 5
    centred = DESIGN - 3  # every trait's mean is exactly 3
    assert (centred.T @ centred).tolist() == (np.eye(5, dtype=int) * 400).tolist()
    assert {pid: row for pid, row in zip(ids, DESIGN.tolist(), strict=True)} == recipe()
    assert PERSONAS.column_names == [
        "persona_id",
        "narrative",
        "gender",
        "age",
        "occupation",
        "place",
        "household",
    ]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_narratives_are_distinct_sized_and_never_quote_an_inventory_item():
    narratives = PERSONAS.column("narrative").to_pylist()
    assert len(set(narratives)) == 200
    assert all(100 <= len(text.split()) <= 200 for text in narratives)
    runs = set()
    for text in ITEMS:
        tokens = words(text)
        runs.update(tuple(tokens[i : i + 5]) for i in range(len(tokens) - 4))
    for narrative in narratives:
        tokens = words(narrative)
        assert not runs & {tuple(tokens[i : i + 5]) for i in range(len(tokens) - 4)}
        flat = " ".join(tokens)
        assert not any(" ".join(words(text)) in flat for text in ITEMS)


# ------------------------------------------------------------------------ the statistics


def test_spearman_by_hand_with_ties_and_gaps():
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6*4/120
    # ranks 1.5 1.5 3.5 3.5 against 1 2 3 4: 4 / sqrt(4 * 5)
    assert spearman([1, 1, 2, 2], [1, 2, 3, 4]) == pytest.approx(4 / math.sqrt(20))
    assert spearman([1, 2, np.nan, 3], [3, 2, 9, 1]) == pytest.approx(-1.0)
    assert spearman([3, 3, 3], [1, 2, 3]) == 0.0  # undefined: reported as 0
    assert spearman([1], [2]) == 0.0


def test_spearman_and_its_matrix_agree_with_scipy():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 6, size=(60, 5)).astype(float)
    y = x + rng.normal(0, 2, size=x.shape)
    for j in range(5):
        assert spearman(x[:, j], y[:, j]) == pytest.approx(spearmanr(x[:, j], y[:, j])[0])
    cross = cross_correlations(x, y)
    expected = np.array([[spearmanr(x[:, j], y[:, k])[0] for k in range(5)] for j in range(5)])
    assert np.allclose(cross, expected)
    worst, (row, col) = max_off_diagonal(cross)
    off = np.abs(expected) - np.eye(5) * 9
    assert worst == pytest.approx(off.max())
    assert off[row, col] == off.max() and row != col


def test_bootstrap_interval_is_the_percentile_interval_of_seeded_resamples():
    rng = np.random.default_rng(5)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    draws = np.random.default_rng(11).integers(0, 40, size=(500, 40))
    rhos = [spearmanr(x[d], y[d])[0] for d in draws]
    low, high = bootstrap_interval(x, y, resamples=500, seed=11)
    assert (low, high) == pytest.approx(tuple(np.percentile(rhos, [2.5, 97.5])))
    assert low < spearman(x, y) < high
    assert bootstrap_interval(x, x, seed=1) == (1.0, 1.0)
    assert bootstrap_interval(x, np.full(40, 3.0), seed=1) == (0.0, 0.0)


def test_acquiescence_entropy_and_ratings_by_hand():
    keyed = np.array([item.keyed for item in IPIP_50.items])
    assert acquiescence(np.full((2, 50), 5.0), IPIP_50) == 2.0  # agrees with everything
    assert acquiescence(np.full((1, 50), 2.0), IPIP_50) == -1.0
    # a consistent respondent: 4 to forward items, 2 to reverse ones; then 5 and 1
    content = np.where(keyed > 0, 4.0, 2.0)[None, :]
    extreme = np.where(keyed > 0, 5.0, 1.0)[None, :]
    assert acquiescence(np.vstack([content, extreme]), IPIP_50) == 0.0
    assert acquiescence(np.full((1, 50), np.nan), IPIP_50) is None
    assert mean_entropy([[0.5, None, 1.0], None, [0.0]]) == pytest.approx(0.5)
    assert mean_entropy([[None], None]) is None
    assert [rating(r) for r in (0.6, 0.59, 0.3, 0.29, -0.8)] == [
        "usable",
        "weak",
        "weak",
        "no signal",
        "no signal",
    ]


def test_the_report_says_the_verdict_and_renders_offline_in_a_browser(tmp_path):
    """A weak scorer (scores 0.3 x the level plus noise) and one trait's scores constant."""
    known = DESIGN.astype(float)
    scored = 3 + 0.3 * (known - 3) + np.random.default_rng(0).normal(0, 0.4, known.shape)
    scored[:, 4] = 3.0
    document = validity(known, scored, seed=0)
    document.update(
        check="known-answer set",
        known_label="designed level",
        unit="personas",
        source="test",
        instrument="ipip-50",
        answer_mode="logprob",
        model="m",
        endpoint="e",
        personas={"asked": 200, "scored": 200},
        acquiescence=0.12,
        entropy_mean=None,
        rows=[],
    )
    document["verdict"] = verdict(document)
    assert document["verdict"]["weakest"] == "neuroticism"
    assert document["verdict"]["text"].startswith("No usable signal: the neuroticism scores")
    document["cost"] = cost(Counter({"score:in": 8, "score:requests": 401}), 20.0, ["score"])
    assert document["cost"]["seconds_per_persona"] == 2.5
    assert document["cost"]["score_requests_per_persona"] == 401 / 8
    json_path, html_path = write_validity_report(tmp_path, document, known, scored)
    assert json.loads(json_path.read_text())["traits"]["neuroticism"]["constant"] is True
    page = html_path.read_text()
    assert "No usable signal" in page and "constant: r undefined, shown as 0" in page
    assert "wall time (s)" in page
    [(width, height, colours)] = embedded_pngs(html_path)
    assert width > 600 and height > 150 and colours > 16
    shown = render(html_path, tmp_path / "browser", height=1600)
    assert shown.fetched == [] and shown.images == [[width, height, 1]]
    assert shown.text_chars > 1000 and shown.ink > 0.05


# ------------------------------------------------------------------------ stub scorers


def request_data(body: dict) -> dict:
    """The DATA block of a request ({} for the mode probe, which has none)."""
    content = body["messages"][-1]["content"]
    if "<data>" not in content:
        return {}
    return json.loads(content.split("<data>\n", 1)[1].split("\n</data>", 1)[0])


def keyed_answer(level: float, data: dict) -> float:
    """The answer a persona at `level` gives to the statement of `data`, reverse keying
    included."""
    return level if ITEMS[data["statement"]].keyed > 0 else 6 - level


def designed_logprobs(body: dict) -> list[tuple[str, float]]:
    """Answers that follow the designed levels: the keyed level with p 0.75, "3" with 0.25
    (so every expected answer is 0.75 * answer + 0.75, and its entropy 0 or H(0.75, 0.25))."""
    data = request_data(body)
    if not data:
        return [("3", math.log(0.5)), ("4", math.log(0.5))]
    item = ITEMS[data["statement"]]
    answer = int(keyed_answer(LEVELS[data["persona"]][TRAITS.index(item.trait)], data))
    if answer == 3:
        return [("3", 0.0), ("x", -1.0)]
    return [(str(answer), math.log(0.75)), ("3", math.log(0.25))]


def always_three(body: dict) -> list[tuple[str, float]]:
    return [("3", 0.0), ("x", -1.0)]


def validate(server: LLMTestServer, out, *args: str) -> object:
    sets = [*stub_llm_sets(server), "seed=7", "progress_s=60"]
    return CliRunner().invoke(
        cli,
        ["validate-scorer", "--out", str(out), *args, *[a for s in sets for a in ("--set", s)]],
    )


@pytest.mark.slow
def test_a_scorer_that_follows_the_design_scores_r_one_on_every_trait(ray_local, tmp_path):
    out = tmp_path / "validate"
    with LLMTestServer(logprobs=designed_logprobs) as server:
        result = validate(server, out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for trait in TRAITS:
        row = report["traits"][trait]
        assert row["r"] == pytest.approx(1.0) and row["ci"] == pytest.approx([1.0, 1.0])
        assert row["n"] == 200 and not row["constant"]
        # 0.75 * level + 0.75 over 40 personas at each level: mean 3, SD 0.75 * sqrt(2)
        assert row["scored_mean"] == pytest.approx(3.0)
        assert row["scored_sd"] == pytest.approx(0.75 * math.sqrt(2))
    cross = np.array(report["cross"])
    assert np.allclose(cross, np.eye(5), atol=1e-12)
    assert report["discriminant_max_abs"] == pytest.approx(0.0, abs=1e-12)
    assert report["acquiescence"] == pytest.approx(0.0, abs=1e-6)
    # a fifth of the answers (keyed level 3) are certain, the rest H(0.75, 0.25)
    assert report["entropy_mean"] == pytest.approx(0.8 * H_75_25, rel=1e-6)
    assert report["personas"] == {"asked": 200, "scored": 200}
    assert report["answer_mode"] == "logprob" and report["instrument"] == "ipip-50"
    cost = report["cost"]
    assert cost["personas_scored_this_run"] == 200
    assert cost["score_requests_per_persona"] == pytest.approx(50 + 1 / 200)  # and the probe
    assert cost["score_completion_tokens_per_persona"] > 0
    assert report["verdict"]["rating"] == "usable"
    assert "Usable" in result.output and "report:" in result.output
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "Usable" in page
    design = dict(zip(PERSONAS.column("persona_id").to_pylist(), DESIGN.tolist(), strict=True))
    for row in report["rows"]:
        assert row["known"] == design[row["id"]]
        assert row["scored"] == pytest.approx([0.75 * v + 0.75 for v in design[row["id"]]])


@pytest.mark.slow
def test_a_scorer_that_always_answers_three_scores_zero_and_says_why(ray_local, tmp_path):
    out = tmp_path / "validate"
    with LLMTestServer(logprobs=always_three) as server:
        result = validate(server, out, "--limit", "20")
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        for trait in TRAITS:
            row = report["traits"][trait]
            assert row["r"] == 0.0 and row["ci"] == [0.0, 0.0] and row["constant"]
            assert row["scored_mean"] == 3.0 and row["scored_sd"] == 0.0
        assert report["cross"] == [[0.0] * 5] * 5
        assert report["acquiescence"] == 0.0 and report["entropy_mean"] == 0.0
        assert report["personas"] == {"asked": 20, "scored": 20}
        assert report["verdict"]["rating"] == "no signal"
        assert "constant: the scores (or the known levels) do not vary" in result.output
        assert "No usable signal" in result.output

        # a re-run asks nothing again; another answer mode is refused, --replace starts over
        before = len(server.records())
        again = validate(server, out, "--limit", "20")
        assert again.exit_code == 0, again.output
        assert len(server.records()) == before
        assert json.loads((out / "report.json").read_text())["traits"] == report["traits"]
        refused = validate(server, out, "--limit", "20", "--mode", "text")
        assert refused.exit_code == 2
        assert 'mode "auto": pass --replace' in refused.output
        replaced = validate(server, out, "--limit", "20", "--mode", "text", "--replace")
        assert replaced.exit_code == 0, replaced.output
        modes = read_group(out / "bank", "scores").column("answer_mode").to_pylist()
        assert modes == ["text"] * 20


@pytest.mark.slow
def test_the_real_embedded_model_gets_a_report_with_numbers_in_range(ray_local, tmp_path):
    out = tmp_path / "validate"
    sets = [
        "llm.embedded.n_ctx=1024",
        "llm.timeout_s=240",
        "progress_s=30",
        "ray.num_cpus=2",
        "ray.object_store_mb=512",
    ]
    args = ["validate-scorer", "--out", str(out), "--limit", "10"]
    result = CliRunner().invoke(cli, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["personas"] == {"asked": 10, "scored": 10}
    assert report["answer_mode"] == "logprob"
    assert report["endpoint"].startswith("embedded:SmolLM2")
    for trait in TRAITS:
        row = report["traits"][trait]
        assert -1 <= row["ci"][0] <= row["r"] <= row["ci"][1] <= 1
        assert 1 <= row["scored_mean"] <= 5
    assert np.all(np.abs(report["cross"]) <= 1)
    assert -2 <= report["acquiescence"] <= 2
    assert 0 <= report["entropy_mean"] <= math.log(5)
    assert report["cost"]["seconds_per_persona"] > 0
    assert (out / "report.html").stat().st_size > 10_000


# ------------------------------------------------------------------------ self-reports

SELF_REPORTS = {  # user -> self-reports on a 0-100 scale, distinct per trait
    f"U{i:02d}": [((i * 7 + 13 * k) % 12) * 8.0 + 4.0 for k in range(5)] for i in range(12)
}


def history_line(user: str, **changes) -> str:
    row = {
        "user_id": user,
        "posts": [{"date": "2004-05-14", "text": f"I am poster {user}. " + "Rain again. " * 20}],
        **dict(zip(TRAITS, SELF_REPORTS.get(user, [50.0] * 5), strict=True)),
        **changes,
    }
    return json.dumps(row)


def self_report_logprobs(body: dict) -> list[tuple[str, float]]:
    """A persona answers 5 with p = report / 100 and 1 otherwise (reverse keying swapped), so
    its trait is 1 + 4 * report / 100: scored levels in the order of the self-reports."""
    data = request_data(body)
    if not data:
        return [("3", math.log(0.5)), ("4", math.log(0.5))]
    user = re.search(r"poster (U\d\d)", data["persona"]).group(1)
    item = ITEMS[data["statement"]]
    p = SELF_REPORTS[user][TRAITS.index(item.trait)] / 100
    high, low = ("5", "1") if item.keyed > 0 else ("1", "5")
    return [(high, math.log(p)), (low, math.log(1 - p))]


def mining_responder(body: dict, rng: random.Random) -> str:
    """A persona that names its poster, so the scorer stub can find their self-reports."""
    schema = request_schema(body)
    if schema is None:  # the scorer's requests: their logprobs are what counts
        return "3"
    user = re.search(r"poster (U\d\d)", json.dumps(body)).group(1)
    answer = instance(schema, rng, 10)
    answer["narrative"] = f"This is poster {user}, who " + "writes about rain and tea. " * 12
    return json.dumps(answer)


@pytest.mark.slow
def test_histories_mode_correlates_persona_traits_with_self_reports(ray_local, tmp_path):
    source = tmp_path / "users.jsonl"
    source.write_text("".join(history_line(user) + "\n" for user in SELF_REPORTS))
    bodies: list[str] = []

    def keep(body):
        bodies.append(json.dumps(body))

    out = tmp_path / "validate"
    with LLMTestServer(
        responder=mining_responder, logprobs=self_report_logprobs, decide=keep
    ) as server:
        result = validate(server, out, "--histories", str(source))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["check"] == "self-reports" and report["unit"] == "users"
    assert report["personas"] == {"asked": 12, "scored": 12}
    for trait in TRAITS:
        assert report["traits"][trait]["r"] == pytest.approx(1.0)
        assert report["traits"][trait]["n"] == 12
    for row in report["rows"]:
        expected = [1 + 4 * v / 100 for v in SELF_REPORTS[row["id"]]]
        assert row["scored"] == pytest.approx(expected, rel=1e-6)
        assert row["known"] == SELF_REPORTS[row["id"]]
    assert report["cost"]["mine_requests_per_persona"] == 1
    written = (out / "histories.jsonl").read_text()
    assert "openness" not in written and "openness" not in "".join(bodies)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [history_line(u, neuroticism=None) for u in SELF_REPORTS],
            r"too few users with self-reports \(neuroticism 0\); .* at least 10 per trait",
        ),
        (
            [json.dumps({"user_id": u, "posts": ["hi"]}) for u in SELF_REPORTS],
            r"has no trait columns openness, .*neuroticism: each line needs user_id, posts",
        ),
        (
            [history_line("U00", extraversion="high")],
            r'line 1: extraversion is "high", not a number: give each trait as a number',
        ),
        (
            [history_line("U00", extraversion=True)],
            r"line 1: extraversion is true, not a number",
        ),
        ([history_line(u) for u in list(SELF_REPORTS)[:4]], r"too few users .*openness 4"),
        ([history_line("U00"), history_line("U00")], r"user 'U00' is on lines 1 and 2"),
        ([history_line("U00", posts=[])], r"line 1: posts must be a non-empty list"),
        ([history_line("U00", posts=[{"date": "x"}])], r"line 1: posts must be a non-empty"),
        (["{not json"], r"line 1 is not JSON"),
        ([json.dumps({"posts": ["hi"]})], r"line 1 has no user_id"),
    ],
)
def test_bad_self_report_files_exit_2_with_one_line(tmp_path, lines, message):
    source = tmp_path / "users.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "validate"
    result = CliRunner().invoke(
        cli, ["validate-scorer", "--histories", str(source), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert re.search(message, result.output), result.output
    assert not out.exists()


def test_a_limit_below_the_minimum_of_users_is_refused(tmp_path):
    source = tmp_path / "users.jsonl"
    source.write_text("".join(history_line(user) + "\n" for user in SELF_REPORTS))
    out = tmp_path / "validate"
    args = ["validate-scorer", "--histories", str(source), "--limit", "5", "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "within --limit 5 (openness 5, " in result.output and not out.exists()
