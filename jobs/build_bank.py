"""Ray Job entrypoint: build (or resume) a persona bank on the cluster the job runs in.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml \
        -- python jobs/build_bank.py --config jobs/configs/openai.yaml --out /mnt/personagen/bank

Inside a Ray job, RAY_ADDRESS points at the cluster, so the build's Ray Data stream runs on its
nodes. The bank folder must be on storage every node sees (e.g. an EFS/NFS mount): workers write
their part files there. Secrets (the API key) come from the environment of the job
(`ray job submit --runtime-env-json '{"env_vars": {...}}'` or the nodes' environment), never from
the config file.
"""

from __future__ import annotations

import argparse
import sys

from personagen.build import build, summary_rows
from personagen.config import load_config
from personagen.errors import PersonagenError
from personagen.estimate import estimate, print_estimate
from personagen.logs import setup_logging
from personagen.summary import print_counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML configuration (see jobs/configs/)")
    parser.add_argument("--out", required=True, help="the bank folder (shared storage)")
    parser.add_argument("--input", help="histories to build from (default: build.input)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (repeatable)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count requests and prompt tokens per stage, and stop",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            print_estimate(estimate(cfg, args.out, args.input))
            return 0
        summary = build(cfg, args.out, args.input)
    except PersonagenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_counts(f"build: {args.out}", summary.counts, summary_rows(summary), summary.wall_s)
    for name, value in summary.outputs.items():
        if name != "index":
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
