"""Validation report of a run: OOF scores (all rows, unique questions, per target, per fold),
nested post-processing before/after per column, plots, and a comparison table across runs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import files, layout
from pipeline.core.columns import ID, TARGETS
from pipeline.data import folds, metrics, tables
from pipeline.evaluate import baseline, epochs, postprocess, scores
from pipeline.run.rundir import Run
from pipeline.text import encode

log = logging.getLogger(__name__)


def _plots(run: Run, per_column: dict, pp: dict, base: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    order = sorted(TARGETS, key=lambda c: per_column[c])
    fig, ax = plt.subplots(figsize=(8, 9))
    y = np.arange(len(order))
    ax.barh(y - 0.2, [per_column[c] for c in order], height=0.4, label="OOF")
    ax.barh(y + 0.2, [pp[c]["after_nested"] if pp[c]["applied"] else per_column[c] for c in order], height=0.4,
            label="post-processed (nested)")
    ax.scatter([base[c] for c in order], y, marker="|", s=160, color="black", label="TF-IDF ridge, same folds")
    ax.set_yticks(y, order, fontsize=7)
    ax.set_xlabel("Spearman")
    ax.set_title(f"{run.name}: per-target OOF Spearman")
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(run.plot("per_target"))
    with files.atomic_path(paths[-1]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for k in run.finished_folds():
        h = pd.read_csv(run.fold(k).history)
        a1.plot(h["epoch"], h["loss"], "-o", color=f"C{k}", label=f"fold {k} train")
        a1.plot(h["epoch"], h["val_loss"], "--", color=f"C{k}", label=f"fold {k} val")
        a2.plot(h["epoch"], h["val_spearman"], "-o", color=f"C{k}", label=f"fold {k}")
        if "inner_spearman" in h:  # train.keep = inner: the rows that chose the epoch
            a2.plot(h["epoch"], h["inner_spearman"], ":", color=f"C{k}", label=f"fold {k} inner (chooses)")
    a1.set(xlabel="epoch", ylabel="BCE loss", title="loss")
    a2.set(xlabel="epoch", ylabel="Spearman", title="validation Spearman")
    a1.legend(fontsize=7), a2.legend(fontsize=7)
    fig.tight_layout()
    paths.append(run.plot("learning_curves"))
    with files.atomic_path(paths[-1]) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return paths


POSTPROCESS_PROMISE = (
    "What the post-processed number promises: the Spearman a test set of postprocess.eval_rows rows (476: the "
    "competition's test.csv) can expect from the transforms, each random question-grouped held set transformed as "
    "chosen on the other rows (snap's levels from their labels too). The gain of adding ties depends on the "
    "size of the set they meet; each method's nested gain (mean over the 30 columns, each method alone) by the "
    "size of the held sets:")


def _size(n) -> str:
    return f"{int(n)}-row held sets" if int(n) else "held (sub-)folds"


def _maybe(value) -> str:
    return "n/a (folds trained before every epoch's predictions were kept, or one fold)" if value is None \
        else f"{value:.4f}"


def _markdown(run: Run, rep: dict) -> str:
    sizes = [int(n) for n in next(iter(rep["postprocess_by_size"].values()), {})]
    pp, names = rep["postprocess"], [name for name, _ in scores.SCORE_MEANINGS]
    fold_mean = float(np.mean([v["val_spearman"] for v in rep["per_fold"].values()]))
    lines = [f"# Validation report: {run.name}", "",
             f"- {names[0]}, {rep['n_rows']} rows: **{rep['oof_spearman']:.4f}**",
             f"- {names[1]}: {fold_mean:.4f}",
             f"- {names[2]}: {rep['oof_spearman_unique_questions']:.4f}",
             f"- {names[3]}: {pp['before']:.4f}; held sets: {pp['split']}",
             f"- {names[4]}: {pp['after_nested']:.4f} ({pp['n_applied']} column(s) changed)",
             f"- {names[5]}: **{pp['after_honest']:.4f}** ({postprocess.gain_text(pp)})",
             f"- {names[6]}: {_maybe(rep['epochs']['last'])} (epochs {rep['epochs']['last_epochs']})",
             f"- {names[7]}: **{_maybe(rep['epochs']['other_folds'])}** (epochs {rep['epochs']['other_folds_epochs']}; "
             f"kept: {rep['epochs']['kept_epochs']}, {scores.KEPT_EPOCH[rep['keep']][1]})",
             f"- Constant columns (scored 0): {rep['n_constant']} {rep['constant_columns'] or ''}",
             f"- Folds: {rep['folds_done']}", "", "| fold | Spearman | best epoch |", "|---|---|---|"]
    lines += [f"| {k} | {v['val_spearman']:.4f} | {v['best_epoch']} |" for k, v in rep["per_fold"].items()]
    lines += ["", "What each score means:", "", scores.markdown()]
    lines += ["", POSTPROCESS_PROMISE, "", "| method | " + " | ".join(_size(n) for n in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    lines += [f"| {m} | " + " | ".join(f"{g[str(n)]:+.4f}" for n in sizes) + " |"
              for m, g in rep["postprocess_by_size"].items()]
    lines += ["", "Token lengths per field before truncation (train rows), against the field's budget:", "",
              "| field | budget | median | p75 | p90 | rows truncated |", "|---|---|---|---|---|---|"]
    lines += [f"| {t['field']} | {t['budget']} | {t['median']:.0f} | {t['p75']:.0f} | {t['p90']:.0f} | "
              f"{100 * t['truncated_share']:.0f}% |" for t in rep["truncation"]]
    lines += ["", f"TF-IDF + ridge baseline on the same folds; **{len(rep['below_baseline'])}** target(s) score below it "
              "(marked ⚠).", "",
              "| target | OOF | TF-IDF ridge | post-processing | before (scored subsets) | nested after |",
              "|---|---|---|---|---|---|"]
    for c in TARGETS:
        p = rep["postprocess_columns"][c]
        method = f"{p['method']} {p['params'].get('k', p['params'].get('q', ''))}".strip() if p["applied"] else "-"
        flag = " ⚠" if c in rep["below_baseline"] else ""
        after = p["after_nested"] if p["applied"] else p["before"]  # what is kept: untouched unless applied
        lines.append(f"| {c}{flag} | {rep['per_column'][c]:.4f} | {rep['baseline_per_column'][c]:.4f} | {method} | "
                     f"{p['before']:.4f} | {after:.4f} |")
    lines += ["", "![per target](per_target.png)", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


REPORT_VERSION = 7  # bump when the report gains content, so current-looking old reports are rebuilt


def _truncation(cfg, run: Run, train: pd.DataFrame) -> list[dict]:
    encoder = run.encoder(cfg.cache_dir)
    return encode.truncation_table(encoder.encode(train, "train"), encoder.tok, encoder.settings)


def validate_run(cfg, run: Run) -> list[Path]:
    oof = run.refuse_links().load_oof()
    run.check_folds(cfg)
    run.check_data(tables.fingerprint(cfg))
    for k in run.finished_folds():
        run.verify_weights(k)
    stamp = files.sha256_text(oof.to_csv(index=False), *(files.sha256_file(run.fold(k).epoch_oof) for k in
                                                         run.finished_folds() if run.fold(k).epoch_oof.is_file()),
                              cfg.postprocess.methods, cfg.postprocess.round_grids,
                              cfg.postprocess.kmeans_levels, cfg.postprocess.eval_rows, cfg.postprocess.keep_margin,
                              REPORT_VERSION)
    if files.is_current(run.report_json, stamp, run.report_md):
        return [run.report_json, run.report_md, run.postprocess]
    train = tables.load(cfg, "train")
    truth = train[train[ID].isin(oof[ID])].reset_index(drop=True)
    y, p = metrics.align(truth, oof)
    score = metrics.spearman(y, p)
    unique = metrics.score_unique_questions(truth, oof, cfg.folds.group_key)
    fold_of = folds.by_id(cfg, train)  # read folds.csv once: nesting below, the baseline further down
    groups = truth[cfg.folds.group_key].to_numpy()
    one_fold = len(np.unique(fold_of.loc[truth[ID]])) < 2  # sub-folds of it stand in for folds
    fold, split_note = postprocess.split_for_nesting(fold_of.loc[truth[ID]].to_numpy(), groups)
    pp_cfg = cfg.postprocess
    if pp_cfg.eval_rows:
        done = run.finished_folds()
        split_note = (("" if len(done) > 1 else f"only fold {done[0]} is finished: ") +
                      f"random question-grouped sets of {min(pp_cfg.eval_rows, len(y) // 2)} held rows, each "
                      f"transformed as chosen on the other rows ({postprocess.DRAWS} draws)")
    pp = postprocess.fit(y, p, fold, TARGETS, y, pp_cfg.methods, pp_cfg.round_grids, pp_cfg.kmeans_levels,
                         pp_cfg.eval_rows, groups, pp_cfg.keep_margin, one_fold)
    sizes = sorted({s for s in (100, 250, pp_cfg.eval_rows, 1000) if 0 < s <= len(y) // 2}) + [0]
    by_size = postprocess.gain_by_size(y, p, fold, TARGETS, sizes, pp_cfg.methods, pp_cfg.round_grids,
                                       pp_cfg.kmeans_levels, groups)
    truncation = _truncation(cfg, run, train)
    base = baseline.oof_scores(train, tables.targets(train).astype(float), fold_of.loc[train[ID]].to_numpy(),
                               run.finished_folds())
    per_fold = {k: {key: files.read_json(run.fold(k).metrics)[key]
                    for key in ("val_spearman", "best_epoch")} for k in run.finished_folds()}
    rep = {"run": run.name, "stamp": stamp, "n_rows": len(truth), "folds_done": list(per_fold),
           "oof_spearman": score.mean, "oof_spearman_unique_questions": unique.mean,
           "n_constant": score.n_constant, "constant_columns": score.constant_columns, "per_fold": per_fold,
           "per_column": score.per_column, "postprocess": {**postprocess.summary(pp, one_fold), "split": split_note},
           "postprocess_columns": pp, "postprocess_by_size": by_size, "eval_rows": cfg.postprocess.eval_rows,
           "baseline_per_column": base, "truncation": truncation, "epochs": epochs.scores(run, truth),
           "keep": run.load_config().train.keep,
           "below_baseline": [c for c in TARGETS if score.per_column[c] < base[c]]}
    paths = _plots(run, score.per_column, pp, base)
    paths.append(files.write_json(run.postprocess, pp))
    paths.append(files.write_text(run.report_md, _markdown(run, rep)))
    paths.append(files.write_json(run.report_json, rep))  # last: its stamp marks the report current
    log.info("%s: OOF %.4f at the kept epochs (%s), %s at the last, %s at the epochs the other folds choose "
             "(honest)", run.name, score.mean, scores.KEPT_EPOCH[rep["keep"]][0], _maybe(rep["epochs"]["last"]),
             _maybe(rep["epochs"]["other_folds"]))
    log.info("%s: OOF %.4f, unique-question OOF %.4f, post-processed nested %.4f (honest %.4f), %d constant "
             "column(s), %d target(s) below the TF-IDF baseline -> %s", run.name, score.mean, unique.mean,
             rep["postprocess"]["after_nested"], rep["postprocess"]["after_honest"], score.n_constant,
             len(rep["below_baseline"]), run.report_dir)
    return paths


def compare(cfg, members: list[Run]) -> Path:
    rows = ["| run | folds | OOF | unique-question OOF | post-processed (nested) | constant cols |",
            "|---|---|---|---|---|---|"]
    for run in members:
        validate_run(cfg, run)
        r = files.read_json(run.report_json)
        rows.append(f"| {run.name} | {len(r['folds_done'])} | {r['oof_spearman']:.4f} | "
                    f"{r['oof_spearman_unique_questions']:.4f} | {r['postprocess']['after_nested']:.4f} | "
                    f"{r['n_constant']} |")
    table = "\n".join(rows) + "\n"
    log.info("\n%s", table)
    return files.write_text(layout.compare_report(cfg), table)


def validate(cfg, compare_runs: list[str] | None = None) -> list[Path]:
    if compare_runs:
        return [compare(cfg, [Run.resolve(r, cfg) for r in compare_runs])]
    return validate_run(cfg, Run.of(cfg))
