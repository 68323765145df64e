"""Run every benchmark: `python -m benchmarks` (or `make bench`). Figures go to benchmarks/results/.

The scale runs (250 MB as 64 and 4,000 files, then 1 GB) and the datatrove side by side take most of
the time (~15 minutes on 2 cores); the projection reads their results, so it runs last."""

from benchmarks import (
    ablation_contrast,
    dedup_scale,
    ingest,
    memory,
    minhash,
    projection,
    quality,
    scale,
    side_by_side,
    tokenize,
    train,
)

for bench in (ingest, minhash, dedup_scale, quality, tokenize, memory, train, ablation_contrast):
    bench.main()
scale.main([])
scale.main(["--mb", "1000", "--files", "64", "--base-files", "64", "--name", "scale-1gb"])
side_by_side.main([])
projection.main([])
