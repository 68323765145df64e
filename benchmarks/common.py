"""What every benchmark shares: the data folder, the machine description, the results file."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZYDA2_DATA", REPO.parent / "shared" / "data")).resolve()
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_gb, 1),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 3) -> float:
    """Best wall time of `repeat` calls: the least disturbed by the rest of the machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def doc_corpus(target_mb: float, chunk_chars: int = 20_000) -> list[str]:
    """Real English-ish text at run time: the docs Debian installs under /usr/share/doc (changelogs,
    copyright files, READMEs), cut into ~20k-character documents. Deterministic for a machine."""
    import gzip
    docs: list[str] = []
    total = 0
    for path in sorted(Path("/usr/share/doc").rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        for i in range(0, len(text), chunk_chars):
            chunk = text[i: i + chunk_chars]
            if chunk.strip():
                docs.append(chunk)
                total += len(chunk.encode())
        if total >= target_mb * 1e6:
            break
    return docs


def ray_workers_rss_mb(field: str = "VmHWM", own: bool = False) -> list[float]:
    """Memory of every live Ray worker process on this machine, largest first, in MB:
    VmHWM = peak resident set over the worker's life, VmRSS = resident now. `own`: only the workers
    of the Ray instance this process started (its descendants), not other users' on a shared machine."""
    import psutil
    sizes = []
    mine = {p.pid for p in psutil.Process().children(recursive=True)} if own else None
    for status in Path("/proc").glob("[0-9]*/status"):
        if mine is not None and int(status.parent.name) not in mine:
            continue
        try:
            cmdline = (status.parent / "cmdline").read_bytes()
            if b"default_worker.py" not in cmdline and not cmdline.startswith(b"ray::"):
                continue
            for line in status.read_text().splitlines():
                if line.startswith(field + ":"):
                    sizes.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return sorted(sizes, reverse=True)


def take_mb(texts: list[str], mb: float) -> tuple[list[str], int]:
    """The shortest prefix of `texts` holding at least `mb` MB of UTF-8, and its byte count."""
    out, n = [], 0
    for t in texts:
        if n >= mb * 1e6:
            break
        out.append(t)
        n += len(t.encode())
    return out, n
