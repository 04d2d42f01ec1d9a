"""bundle.json: what `package` writes into a bundle and what every reader (the Kaggle kernels, `package` itself)
checks before trusting it: the pipeline's mark, the runs, and the blend (method, one weight per run or per run
and target: finite, non-negative, adding up to 1), with a digest of the blend that package recorded, so an edited
or half-copied manifest is refused instead of giving a wrong submission with exit 0."""
from __future__ import annotations

import json
import math
from pathlib import Path

from pipeline.core import files, layout
from pipeline.core.errors import DamagedArtifact

FORMAT = {"format": "quest-bundle", "format_version": 1}
BLEND_METHODS = ("mean", "rank", "optimize")  # ensemble.method's choices; "optimize" blends as a weighted mean
TARGET_COUNT = 30


def blend_digest(runs: list[str], method: str, weights) -> str:
    return files.sha256_text(json.dumps({"runs": runs, "method": method, "weights": weights}, sort_keys=True))


def blend(runs: list[str], method: str, weights) -> dict:
    """The blend entries of bundle.json, checked, with their digest."""
    check_blend(Path(layout.MANIFEST_NAME), runs, method, weights)
    return {"method": method, "weights": weights, "blend_sha256": blend_digest(runs, method, weights)}


def check_blend(where: Path, runs: list[str], method, weights):
    """The blend must fit the runs: a known method, one weight per run (or per run and target), each a finite
    number >= 0, adding up to 1 (per target, too), as `ensemble` fits them."""
    def bad(why: str):
        raise DamagedArtifact(f"{where}: {why}; package the bundle again (`python run.py package`)")

    if method not in BLEND_METHODS:
        bad(f"blend method {method!r} is not one of {', '.join(BLEND_METHODS)}")
    if not isinstance(weights, list) or len(weights) != len(runs):
        bad(f"expected one weight per run ({len(runs)} runs: {runs}), found {weights!r}")
    per_target = any(isinstance(w, list) for w in weights)
    if per_target and not all(isinstance(w, list) and len(w) == TARGET_COUNT for w in weights):
        bad(f"per-target weights must be {len(runs)} lists of {TARGET_COUNT}")
    columns = list(zip(*weights)) if per_target else [weights]
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
               for col in columns for w in col):
        bad(f"blend weights must be finite numbers >= 0, found {weights!r}")
    if any(abs(sum(col) - 1) > 1e-6 for col in columns):
        bad(f"blend weights must add up to 1 (for each target, with per-target weights), found {weights!r}")


def read(bundle_dir: str | Path) -> dict:
    """A bundle's manifest, checked: marked by `package`, plain run names, a valid blend whose digest matches."""
    path = layout.Bundle(Path(bundle_dir)).manifest
    m = files.read_json(path)
    if not isinstance(m, dict) or m.get("format") != FORMAT["format"]:
        raise DamagedArtifact(f"{path} was not written by `python run.py package` (no format {FORMAT['format']!r}); "
                              "attach a bundle it wrote")
    runs = m.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise DamagedArtifact(f"{path}: 'runs' must be a list of run names")
    for r in runs:
        layout.plain(r, f"run name in {path}")
    if m.get("kind") == "inference":
        if not runs:
            raise DamagedArtifact(f"{path}: an inference bundle names no run")
        check_blend(path, runs, m.get("method"), m.get("weights"))
        if m.get("blend_sha256") != blend_digest(runs, m["method"], m["weights"]):
            raise DamagedArtifact(f"{path}: its runs, method or weights differ from those `package` recorded "
                                  "(blend_sha256); package the bundle again (`python run.py package`)")
    return m
