"""What each recipe in configs/recipes/ leaves to the defaults: every modelling, training, post-processing and
blending setting its TOML does not set (locations, and settings that may change when a run is resumed, left
out), with the value it inherits. `python -m pipeline.dev.recipes` prints RECIPES.md's "Inherited defaults"
table; tests/test_recipes.py keeps the two equal, so a new default or a new recipe cannot go unstated.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from pipeline.core import config as config_lib, settings

RECIPES = config_lib.ROOT / "configs" / "recipes"
SECTIONS = ("encode", "model", "train", "postprocess", "ensemble")
# Not recipe choices: which run to blend (this config's), and the ridge's penalties (train.kind = "ridge" only).
NOT_CHOICES = ("ensemble.runs", "train.ridge_alphas", "train.ridge_inner_folds")


def inherited(path: Path) -> dict[str, object]:
    """`section.key` -> default, for each setting of SECTIONS the recipe's TOML does not set."""
    data, defaults = tomllib.loads(Path(path).read_text()), config_lib.Config()
    out = {}
    for section in SECTIONS:
        values = getattr(defaults, section)
        for key, facts in settings.facts_of(values).items():
            name = f"{section}.{key}"
            if not (facts.location or facts.resumable or facts.plain_name or name in NOT_CHOICES) \
                    and key not in data.get(section, {}):
                out[name] = getattr(values, key)
    return out


def table() -> str:
    """One row per setting some recipe inherits, one column per recipe: the inherited value, or `set` where the
    recipe sets it itself."""
    recipes = sorted(RECIPES.glob("*.toml"))
    found = {p.stem: inherited(p) for p in recipes}
    keys = sorted({k for values in found.values() for k in values},
                  key=lambda k: (SECTIONS.index(k.split(".")[0]), k))
    rows = ["| setting | " + " | ".join(found) + " |", "|---|" + "---|" * len(found)]
    for key in keys:
        cells = [f"`{found[name][key]!r}`" if key in found[name] else "set" for name in found]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
