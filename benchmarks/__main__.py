"""Run every benchmark: `python -m benchmarks` (or `make bench`). Figures go to benchmarks/results/."""

from benchmarks import ingest

for bench in (ingest,):
    bench.main()
