"""Run every benchmark: `python -m benchmarks` (or `make bench`). Figures go to benchmarks/results/."""

from benchmarks import ablation_contrast, dedup_scale, ingest, memory, minhash, quality, tokenize, train

for bench in (ingest, minhash, dedup_scale, quality, tokenize, memory, train, ablation_contrast):
    bench.main()
