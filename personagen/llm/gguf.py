"""The weights the embedded server runs: the GGUF file as shipped, or its 16-bit float copy.

SmolLM2-135M ships as Q4_1. On x86 CPUs llama.cpp has no fast kernel for Q4_1 matrix products,
and the model is so small that dequantising on the fly dominates: the same weights stored as
F16 read prompts 2.1x faster on one core (414 vs 197 tokens/s), with next-token distributions
that agree with the shipped file's (KL 0.002 nats per token, perplexity 14.52 vs 14.55; see
benchmarks/RESULTS.md, "Embedded LLM weights and the demo"). The copy is made once with
llama.cpp's own converter (`llama_model_quantize`) and kept in the cache folder, keyed by the
source's content.

For large models the F16 copy would cost 4x the memory, so `auto` converts only small files.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
from pathlib import Path

from personagen.errors import PersonagenError

log = logging.getLogger(__name__)

AUTO_F16_MAX_BYTES = 512 * 1024**2
"""`weights: auto` converts GGUF files up to this size (the F16 copy is ~2.5-4x larger)."""


def cache_folder(cache_dir: str | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "personagen" / "gguf"


def serving_file(source: Path, weights: str, cache_dir: str | None = None) -> Path:
    """The GGUF file the server loads for `source` under `weights` (auto, f16 or as-is)."""
    stat = source.stat()
    wants_f16 = weights == "f16" or (weights == "auto" and stat.st_size <= AUTO_F16_MAX_BYTES)
    if not wants_f16:
        return source
    digest = _sha256(source, stat.st_size, stat.st_mtime_ns)
    target = cache_folder(cache_dir) / f"{source.stem}.{digest[:12]}.f16.gguf"
    if not target.is_file():
        convert_to_f16(source, target)
    return target


def convert_to_f16(source: Path, target: Path) -> None:
    """Write `source`'s weights as F16 to `target` (atomically: concurrent runs may race)."""
    import llama_cpp

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    log.info("converting %s to F16 weights for the embedded server (once)", source.name)
    try:
        code = llama_cpp.llama_model_quantize(
            str(source).encode(), str(tmp).encode(), ctypes.byref(params)
        )
        if code != 0:
            raise PersonagenError(
                f"llama.cpp could not convert {source} to F16 (code {code}); "
                "set llm.embedded.weights=as-is to run the file as it is"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The file's content hash, once per process for a file of this size and mtime (every
    stage's server asks for it)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
