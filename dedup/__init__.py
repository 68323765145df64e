"""Cross-source near-duplicate removal: MinHash signatures -> LSH buckets -> connected components
-> resolution by source rank. See `dedup/stage.py` for the flow and its cost."""
