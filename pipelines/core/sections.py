"""The config sections: one dataclass per stage or concern, each field with its default and unit.

`pipelines/core/config.py` assembles them into `Config`, loads YAML into them and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageResources:
    """What one task (or classifier actor) of a stage asks Ray for; unset fields fall back to `ray.task_cpus`."""
    num_cpus: float | None = None
    memory_mb: int | None = None  # Ray's memory reservation: bounds how many of the stage's tasks share a node
    resources: dict[str, float] = field(default_factory=dict)  # custom node resources, e.g. {bigmem: 1}


@dataclass
class ClusterConfig:
    """Shape of a cluster that `jobs/` starts (KubeRay RayJob, Slurm); a local run ignores it."""
    image: str = "rayproject/ray:2.60.0-py311"  # KubeRay: an image with this project's dependencies installed
    head_cpus: int = 4  # the head runs the driver and the progress actor, no stage tasks (num-cpus 0 on it)
    head_memory_gb: int = 16
    workers: int = 2
    worker_cpus: int = 16
    worker_memory_gb: int = 64
    worker_gpus: int = 0
    worker_resources: dict[str, float] = field(default_factory=dict)  # custom resources each worker advertises
    shared_volume_claim: str | None = None  # KubeRay: PVC mounted on every pod at shared_mount (data and outputs)
    shared_mount: str = "/data"
    hf_token_secret: str | None = None  # KubeRay: Secret with key HF_TOKEN, exposed to pods (never in the manifest)


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray instance; "auto" or "ray://host:10001": join
    num_cpus: float | None = None  # local instance only; None = all cores
    task_cpus: float = 0.5  # CPUs each stage task asks for; fractional so 2-core machines never starve
    object_store_mb: int | None = None  # per node (local instance, and the cluster start commands of jobs/)
    max_retries: int = 3  # Ray retries of a task whose worker died (stages are idempotent)
    spill_dir: str | None = None  # object-store spilling folder (fast local disk); None = Ray's default under /tmp
    stage_resources: dict[str, StageResources] = field(default_factory=dict)  # per stage: {dedup: {memory_mb: 4000}}
    # consecutive partition stages (ingest -> heuristic_filter) share one task per partition:
    # the same outputs, fewer tasks to schedule; the progress line then covers the group
    fuse_partition_stages: bool = False
    # partitions grouped into one task (or actor call) of up to task_group_mb MiB of input and
    # task_group_files files, lowered to make task_group_waves groups per task slot (0: no floor);
    # never changes an output byte (pipelines/core/grouping.py)
    task_group_mb: float = 256.0
    task_group_files: int = 64
    task_group_waves: int = 4
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def task_options(self, stage: str) -> dict:
        """Ray options of one task of `stage` ("dedup/signatures/..." counts as dedup)."""
        r = self.stage_resources.get(stage.split("/")[0], StageResources())
        options: dict = {"num_cpus": self.task_cpus if r.num_cpus is None else r.num_cpus}
        if r.memory_mb:
            options["memory"] = r.memory_mb << 20
        if r.resources:
            options["resources"] = dict(r.resources)
        return options


@dataclass
class SourceConfig:
    path: str  # local folder, or fsspec URL (hf://datasets/org/name, https://...)
    include: list[str] = field(default_factory=list)  # glob patterns relative to `path`
    files_from: str | None = None  # optional file listing URLs (one per line), e.g. Dolma's url list
    enabled: bool = True


@dataclass
class IngestConfig:
    batch_docs: int = 2048  # documents per Arrow batch written (bounds a worker's memory)
    max_files_per_source: int | None = None  # sampling for demos; None = every file
    max_docs_per_file: int | None = None  # sampling for demos; None = whole file
    excerpt_chars: int = 200  # raw excerpt kept in quarantine records
    # a parquet file larger than this (MB on disk) is ingested as pieces of whole row groups of about
    # this size, each its own partition (bounded task memory, balanced tasks); None: never split
    split_mb: float | None = 512
    # consecutive files smaller than this (MB on disk) of one source, subfolder, id prefix and format are
    # read as one partition (a bundle): per-partition costs follow the text, not the file count; None: never.
    # 16: a later stage holds a partition's documents in memory (~3.5x the bytes on disk as text; a
    # 64 MB bundle took the 1 GB run's largest worker from 627 MB to 1,188 MB), while a partition's
    # fixed cost (~20 ms over the stages) is ~1% of the work on 16 MB
    bundle_mb: float | None = 16


@dataclass
class NetworkConfig:
    """Remote reads (https://, hf://): how hard to retry and how many files to read from one host at once.
    Never changes outputs, so not part of the config hash (a run can be resumed with other values)."""
    retries: int = 8                   # failed attempts in a row (429 / 5xx / timeout / reset) before the run stops
    backoff_s: float = 0.5             # first backoff ceiling (full jitter), doubling per attempt
    max_backoff_s: float = 30.0        # ceiling of one backoff wait (a server's Retry-After is honoured)
    timeout_s: float = 60.0            # connect and between-bytes timeout of one request
    max_connections_per_host: int = 4  # files read at once from one host (the Hub rate-limits)


@dataclass
class HeuristicFilterConfig:
    enabled: bool = True
    apply_to: list[str] = field(default_factory=list)  # sources the Zyda-1 heuristics run on
    min_chars: int = 100                  # drop below
    min_mean_word_length: float = 3.0     # keep within [min, max]
    max_mean_word_length: float = 12.0
    max_non_alnum_fraction: float = 0.30  # drop above
    max_digit_fraction: float = 0.20      # drop above
    boilerplate_max_counts: dict[str, int] = field(default_factory=lambda: {"lorem ipsum": 0})  # drop above
    dup_line_frac: float | None = 0.3     # datatrove GopherRepetitionFilter (lines/paragraphs only); null = off
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    examples_per_filter: int = 5          # removed documents shown per source and filter in report.json


@dataclass
class DedupConfig:
    enabled: bool = True
    shingle: str = "char"  # "char" or "word"
    ngram: int = 25
    num_hashes: int = 128
    hash_bits: int = 32
    seed: int = 10
    bands: int = 8
    rows: int = 16
    mode: str = "cross"  # "cross": drop lower-ranked sources in multi-source clusters; "all": one doc per cluster
    source_rank: list[str] = field(default_factory=lambda: ["fwe", "dclm", "zyda", "dolma-cc"])
    verify_threshold: float | None = None  # exact Jaccard check of candidate pairs; None = off (as the paper)
    partitions: int = 16  # hash partitions of the band-key shuffle: bounds a bucket task's memory
    # MiB of candidate edges (16 bytes each) per partition of the components and resolve steps: their
    # partition count is the smallest divisor of `partitions` that keeps within it, so a small graph is
    # not cut into slivers. Components and decisions do not depend on it: not in the config hash.
    graph_partition_mb: float = 64.0


@dataclass
class QualityFilterConfig:
    enabled: bool = True
    backend: str = "deberta"  # "deberta" or "fasttext"
    model: str = "nvidia/quality-classifier-deberta"
    apply_to: list[str] = field(default_factory=lambda: ["zyda", "dolma-cc"])
    keep_labels: list[str] = field(default_factory=lambda: ["High"])
    threshold: float | None = None  # fasttext: P(good) cut; None = the one chosen at training (<model>.json)
    max_chars: int | None = 6000  # characters of a document the classifier sees; None = all
    max_tokens: int = 1024
    batch_size: int = 256
    device: str = "auto"  # deberta: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    actors: int = 2  # classifier actors (each loads the model once)
    actor_gpus: float = 0.0  # GPUs per actor (e.g. 1.0 on a GPU cluster)
    fwe_min_int_score: int | None = 3  # FineWeb-Edu kept where int_score >= this; None = untouched


@dataclass
class TokenizeConfig:
    enabled: bool = True
    tokenizer: str = "mistral-v0.1"
    add_bos: bool = False
    append_eos: bool = True
    cache_units: int = 1_000_000  # distinct pre-tokenized units whose ids a worker keeps (~100 bytes each)


@dataclass
class ShardsConfig:
    enabled: bool = True
    shard_tokens: int = 1_000_000_000  # target tokens per .bin shard; shards end at input-file boundaries
    # the plan is made before tokenizing, from the documents' characters: shard_tokens x chars_per_token
    # characters a shard (Mistral v0.1 on English web text: 4.02-4.15 on the fixtures' sources)
    chars_per_token: float = 4.0
    pretrain_weights: dict[str, float] = field(
        default_factory=lambda: {"dclm": 4.0, "fwe": 4.0, "zyda": 0.16, "dolma-cc": 0.24}
    )
    validation_fraction: float = 0.0005  # of each component, by a hash of the cluster root or text; never in training
    anneal_components: list[str] = field(default_factory=lambda: ["fwe", "zyda", "dolma-cc"])
    anneal_fwe_min_int_score: int = 4  # FineWeb-Edu documents in the anneal set
    anneal_min_quality_prob: float = 0.9  # classifier-scored documents in the anneal set
    anneal_replay_fraction: float = 0.6  # share of the anneal mix that replays the pretraining mix
    publish_parquet: bool = True  # Hub-layout parquet under publish/data/<component>/
    # text per Hub parquet file, about (consecutive partitions of one subfolder share a file; the Hub
    # serves files of a few hundred MB best, and thousands of tiny inputs must not make thousands of files)
    publish_mb: float = 512
