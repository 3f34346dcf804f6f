"""Embedded LLM weights: the shipped SmolLM2-135M Q4_1 file against copies in other GGUF types.

For each type, in one process (llama-cpp-python, the library the embedded server runs):
prompt reading speed (tokens/s over a 1,500-token history, one thread and all threads, with and
without logits for every token, which llama-cpp-python needs for logprobs), generation speed
(200 tokens), and how close the copy's next-token distributions are to the shipped file's on a
2,000-token text of the bundled example histories (mean KL divergence, top-1 agreement,
perplexity). The copies are made with llama.cpp's own converter, as `personagen.llm.gguf` does.

    python benchmarks/bench_llm_weights.py
    python benchmarks/bench_llm_weights.py --types f16 q8_0 --repeats 3
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import tempfile
import time
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import Llama

from personagen.commands.demo import example_histories
from personagen.llm.server import default_model_path

GENERATED = 200
TYPES = {
    "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "f32": llama_cpp.LLAMA_FTYPE_ALL_F32,
}


def convert(source: Path, target: Path, ftype: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if code != 0:
        raise SystemExit(f"conversion to {target.name} failed ({code})")


def prompt_speed(model: Path, tokens: list[int], threads: int, logits_all: bool, repeats: int):
    llm = Llama(
        str(model),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
    )
    best = float("inf")
    for _ in range(repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        best = min(best, time.perf_counter() - start)
    return len(tokens) / best


def generation_speed(model: Path, prompt: list[int], repeats: int) -> float:
    """Tokens/s of greedy generation after the prompt (one thread), prompt reading excluded."""
    llm = Llama(str(model), n_ctx=2048, n_threads=1, logits_all=False, verbose=False)
    best = float("inf")
    for _ in range(repeats):
        tokens = llm.generate(prompt, temp=0.0, reset=True)
        next(tokens)  # reads the prompt, samples the first token
        start = time.perf_counter()
        for _ in range(GENERATED - 1):
            next(tokens)
        best = min(best, time.perf_counter() - start)
    return (GENERATED - 1) / best


def next_token_logprobs(model: Path, tokens: list[int]) -> np.ndarray:
    threads = os.cpu_count() or 1
    llm = Llama(str(model), n_ctx=2048, n_threads=threads, logits_all=True, verbose=False)
    llm.eval(tokens)
    scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    shipped = default_model_path()
    text = example_histories().read_text("utf-8")
    vocab = Llama(str(shipped), vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.encode())
    reading, quality = tokens[:1500], tokens[5000:7000]
    cores = os.cpu_count() or 1
    print(f"# {platform.processor() or platform.machine()}, {cores} cores, load {os.getloadavg()}")
    print(f"# shipped: {shipped.name}; prompt {len(reading)} tokens, quality text {len(quality)}")

    reference = next_token_logprobs(shipped, quality)
    targets = np.asarray(quality[1:])
    header = (
        "| weights | prompt tok/s, 1 thread | with logits_all | prompt tok/s, "
        f"{cores} threads | generation tok/s | KL vs shipped | top-1 agreement | perplexity |"
    )
    print(header)
    print("|---" * 8 + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["q4_1 (shipped)", *args.types]:
            if name.startswith("q4_1"):
                model, logprobs = shipped, reference
            else:
                model = Path(tmp) / f"{name}.gguf"
                convert(shipped, model, TYPES[name])
                logprobs = next_token_logprobs(model, quality)
            kl = float((np.exp(reference) * (reference - logprobs)).sum(axis=1).mean())
            agree = float((reference.argmax(axis=1) == logprobs.argmax(axis=1)).mean())
            ppl = float(np.exp(-logprobs[np.arange(len(targets)), targets].mean()))
            one = prompt_speed(model, reading, 1, False, args.repeats)
            one_all = prompt_speed(model, reading, 1, True, args.repeats)
            every = prompt_speed(model, reading, cores, False, args.repeats)
            gen = generation_speed(model, reading[:500], args.repeats)
            print(
                f"| {name} | {one:.0f} | {one_all:.0f} | {every:.0f} | {gen:.0f} | {kl:.4f} | "
                f"{agree:.3f} | {ppl:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
