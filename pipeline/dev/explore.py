"""Exploration helpers for notebooks/explore.ipynb: target distributions and token lengths vs budgets."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.columns import TARGETS
from pipeline.data import tables
from pipeline.text import encode


def target_table(train: pd.DataFrame) -> pd.DataFrame:
    """Per target: distinct values, share of the most common value, mean."""
    y = train[list(TARGETS)]
    return pd.DataFrame({"distinct": y.nunique(), "top_share": y.apply(lambda c: c.value_counts(normalize=True).iloc[0]),
                         "mean": y.mean()}).sort_values("top_share", ascending=False)


def plot_targets(train: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(6, 5, figsize=(15, 14), sharey=False)
    for ax, col in zip(axes.ravel(), TARGETS):
        counts = train[col].round(3).value_counts().sort_index()
        ax.bar(counts.index.astype(str), counts.to_numpy())
        ax.set_title(col, fontsize=8)
        ax.tick_params(labelsize=6, rotation=90)
    fig.tight_layout()
    return fig


def length_table(cfg, split: str = "train") -> pd.DataFrame:
    """Tokens per field before truncation (the model's tokenizer) against the configured budgets."""
    encoder = encode.Encoder.for_model(cfg)
    tok, enc = encoder.tok, encoder.encode(tables.load(cfg, split), split)
    lengths = pd.DataFrame(enc.field_lengths, columns=["title", "body", "answer"])
    specs = encode.sequence_specs(cfg.encode)  # dual: the title is in both sequences
    lengths["total"] = sum(lengths.iloc[:, [i for f in s.fields for i in f]].sum(axis=1) + encode.n_special(tok, s)
                           for s in specs)
    budgets = {"title": cfg.encode.title_weight, "body": cfg.encode.question_weight,
               "answer": cfg.encode.answer_weight, "total": sum(s.max_len for s in specs)}
    rows = {c: {"median": lengths[c].median(), "p75": lengths[c].quantile(0.75), "p90": lengths[c].quantile(0.9),
                "budget": budgets[c], "over_budget": float((lengths[c] > budgets[c]).mean())} for c in lengths}
    return pd.DataFrame(rows).T, lengths


def plot_lengths(lengths: pd.DataFrame, max_len: int):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(np.minimum(lengths["total"], 2000), bins=60)
    ax.axvline(max_len, color="red", linestyle="--", label=f"max_len {max_len}")
    ax.set(xlabel="tokens (title + body + answer + specials, capped at 2000)", ylabel="rows")
    ax.legend()
    return fig
