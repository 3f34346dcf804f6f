"""Ray Job entrypoint: build (or resume) a persona bank on the cluster the job runs in.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml \
        -- python jobs/build_bank.py --config jobs/configs/openai.yaml --out /mnt/personagen/bank

It is `personagen build` (same flags, same code): inside a Ray job, RAY_ADDRESS points at the
cluster, so the build's Ray Data stream runs on its nodes. The bank folder must be on storage
every node sees (e.g. an EFS/NFS mount): workers write their part files there. Secrets (the API
key) come from the environment of the job (`ray job submit --runtime-env-json '{"env_vars":
{...}}'` or the nodes' environment), never from the config file.
"""

from __future__ import annotations

import sys

from personagen.cli import cli

if __name__ == "__main__":
    cli(["build", *sys.argv[1:]], prog_name="personagen build")
