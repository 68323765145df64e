"""Run every benchmark: `python -m benchmarks` (or `make bench`). Figures go to benchmarks/results/."""

from benchmarks import dedup_scale, ingest, memory, minhash, quality, tokenize

for bench in (ingest, minhash, dedup_scale, quality, tokenize, memory):
    bench.main()
