"""Ingest throughput per core: our readers and ingest vs plain pyarrow and datatrove readers.

The corpus is the shared fixtures, each file linked COPIES times (so every reader sees the same
bytes, several MB per format). Every figure is single-process (= per core), best of 3 runs.
Also: the whole ingest stage on Ray tasks (what the runner uses) vs Ray Data on the parquet
sources, the measurement behind that design choice.

  python -m benchmarks.ingest            # writes benchmarks/results/ingest.json
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from benchmarks.common import DATA, REPO, write_results
from pipelines.core.config import IngestConfig, load_config
from pipelines.core.sources import SourceFile
from pipelines.ingest.discover import file_format
from pipelines.ingest.readers import read_json_lines, read_parquet
from pipelines.ingest.stage import ingest_file

COPIES = 8
FORMATS = {  # name -> (input folder, source, glob)
    "dclm jsonl.zst": ("dclm", "dclm", "**/*.jsonl.zst"),
    "fineweb-edu parquet": ("fineweb-edu", "fwe", "**/*.parquet"),
    "zyda parquet": ("zyda", "zyda", "**/*.parquet"),
    "dolma-cc json.gz": ("dolma-cc", "dolma-cc", "**/*.json.gz"),
}


def build_corpus(root: Path) -> None:
    for folder, _, glob in FORMATS.values():
        for path in sorted((DATA / "sources" / folder).glob(glob)):
            rel = path.relative_to(DATA / "sources" / folder)
            for i in range(COPIES):
                target = root / folder / f"copy{i}" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)


def _files(root: Path, folder: str, source: str, glob: str) -> list[SourceFile]:
    paths = sorted((root / folder).glob(glob))
    return [SourceFile(source, str(p), p.relative_to(root / folder).as_posix(), file_format(p.name), source, i)
            for i, p in enumerate(paths)]


def _ours_read(files):
    n = 0
    for sf in files:
        events = read_parquet(sf.url, 2048) if sf.fmt == "parquet" else read_json_lines(sf.url, sf.fmt)
        for ev in events:
            n += ev.batch.num_rows if hasattr(ev, "batch") else 1
    return n


def _ours_ingest(files, out: Path):
    for sf in files:
        ingest_file(sf, IngestConfig(), out)


def _pyarrow(files):
    n = 0
    for sf in files:
        if sf.fmt == "parquet":
            n += pq.read_table(sf.url).num_rows
        else:
            compression = "zstd" if sf.fmt == "jsonl.zst" else "gzip"
            with pa.input_stream(sf.url, compression=compression) as stream:
                n += pajson.read_json(stream, read_options=pajson.ReadOptions(block_size=64 << 20)).num_rows
    return n


def _datatrove(root: Path, folder: str, glob: str):
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    reader_cls = ParquetReader if glob.endswith(".parquet") else JsonlReader
    reader = reader_cls(str(root / folder), glob_pattern=glob)
    return sum(1 for _ in reader.run())


def _datatrove_ingest(root: Path, folder: str, glob: str, out: Path):
    """datatrove's equivalent of our ingest: its reader piped into its ParquetWriter."""
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    reader_cls = ParquetReader if glob.endswith(".parquet") else JsonlReader
    writer = ParquetWriter(str(out), compression="zstd")
    for _ in writer.run(reader_cls(str(root / folder), glob_pattern=glob).run()):
        pass


def timed_both(fn, repeat: int = 3) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) of `repeat` calls. On a machine shared
    with other work, CPU time is the per-core figure; wall time also counts waiting for a core."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu


def bench_readers(root: Path) -> dict:
    out = {}
    for name, (folder, source, glob) in FORMATS.items():
        files = _files(root, folder, source, glob)
        in_mb = sum(Path(sf.url).stat().st_size for sf in files) / 1e6
        docs = _ours_read(files)
        tmp = Path(tempfile.mkdtemp())
        row = {"files": len(files), "docs": docs, "input_mb": round(in_mb, 2)}
        timings = {
            "ours_read": timed_both(lambda: _ours_read(files)),
            "ours_ingest": timed_both(lambda: _ours_ingest(files, tmp)),
            "pyarrow_read": timed_both(lambda: _pyarrow(files)),
            "datatrove_read": timed_both(lambda: _datatrove(root, folder, glob)),
        }
        try:
            timings["datatrove_ingest"] = timed_both(lambda: _datatrove_ingest(root, folder, glob, tmp / "datatrove"))
        except ValueError as e:  # its writer fixes the schema on the first batch; Dolma's metadata varies
            row["datatrove_ingest_failed"] = str(e).splitlines()[0][:200]
        text_mb = sum(pq.read_table(p, columns=["text"]).column("text").nbytes
                      for p in (tmp / "ingest" / source).glob("*.parquet")) / 1e6
        row["datatrove_output_mb"] = round(sum(p.stat().st_size for p in (tmp / "datatrove").rglob("*")
                                               if p.is_file()) / 1e6, 2)
        row["ours_output_mb"] = round(sum(p.stat().st_size for p in (tmp / "ingest").rglob("*.parquet")) / 1e6, 2)
        shutil.rmtree(tmp)
        row["text_mb"] = round(text_mb, 2)
        for key, (seconds, cpu) in timings.items():
            row[key] = {"seconds": round(seconds, 3), "input_mb_per_s": round(in_mb / seconds, 1),
                        "text_mb_per_s": round(text_mb / seconds, 1), "docs_per_s": round(docs / seconds),
                        "cpu_seconds": round(cpu, 3), "text_mb_per_cpu_s": round(text_mb / cpu, 1)}
        if "datatrove_ingest" in timings:
            row["speedup_ingest_vs_datatrove_ingest"] = round(
                timings["datatrove_ingest"][0] / timings["ours_ingest"][0], 2)
            row["cpu_speedup_ingest_vs_datatrove_ingest"] = round(
                timings["datatrove_ingest"][1] / timings["ours_ingest"][1], 2)
        row["speedup_read_vs_datatrove_read"] = round(timings["datatrove_read"][0] / timings["ours_read"][0], 2)
        row["cpu_speedup_read_vs_datatrove_read"] = round(timings["datatrove_read"][1] / timings["ours_read"][1], 2)
        out[name] = row
        print(name, {k: v["text_mb_per_cpu_s"] for k, v in row.items() if isinstance(v, dict)}, "text MB per CPU s")
    return out


def bench_ray(root: Path) -> dict:
    """Whole-stage ingest of the parquet sources: Ray tasks (ours) vs Ray Data read/map/write."""
    import ray

    from pipelines.core.run import run_pipeline
    from pipelines.pipeline import PIPELINE
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        parquet = [str(p) for folder in ("fineweb-edu", "zyda") for p in sorted((root / folder).rglob("*.parquet"))]
        work = Path(tempfile.mkdtemp())
        cfg = load_config(REPO / "configs" / "local.yaml", ["sources.dclm.enabled=false",
                                                            "sources.dolma-cc.enabled=false"],
                          input_dir=str(root), output_dir=str(work / "tasks"))
        t0 = time.perf_counter()
        report = run_pipeline(PIPELINE, cfg, quiet=True, only=["ingest"])  # the ingest stage alone, as Ray Data does
        tasks_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = ray.data.read_parquet(parquet, include_paths=True)
        ds.map_batches(lambda b: b, batch_format="pyarrow").write_parquet(str(work / "ray_data"))
        data_s = time.perf_counter() - t0
        shutil.rmtree(work)
        return {"docs": report["totals"]["read"], "files": len(parquet),
                "ray_tasks_full_ingest_s": round(tasks_s, 2), "ray_data_copy_only_s": round(data_s, 2),
                "note": "Ray Data only copies rows (no ids, no normalisation, no accounting) and still "
                        "cannot give each row its index in its file, which nemo_id and src_row need"}
    finally:
        ray.shutdown()


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="zyda2-bench-ingest-"))
    try:
        build_corpus(root)
        results = {"copies_of_each_fixture_file": COPIES, "readers_single_core": bench_readers(root),
                   "stage_on_ray_2_cpus": bench_ray(root)}
    finally:
        shutil.rmtree(root)
    write_results("ingest", results)


if __name__ == "__main__":
    main()
