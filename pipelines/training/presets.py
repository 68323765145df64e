"""Model presets: named Zamba2 shapes in `configs/models.yaml` (tiny, zamba2-1.2b, ...).

Read by the training config (is the preset known?) and by `model.zamba2_config` (the shape itself),
so the config does not import the model.
"""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "configs" / "models.yaml"


def load_presets(path: Path = PRESETS) -> dict[str, dict]:
    return yaml.safe_load(Path(path).read_text())
