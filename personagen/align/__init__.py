"""Global alignment: resample a persona set so its trait distribution matches a human reference.

Plain functions over numpy (no Ray, no configuration): density ratios and importance weights
(`density`, `weights`), entropic optimal transport in the log domain (`sinkhorn`) over persona
blocks that may live in other processes (`sharded`; the Ray actors are in
`personagen.runtime.align_shards`), the choice of distinct personas (`select`), and one entry
point, `api.align`, with its `AlignOptions`.
"""
