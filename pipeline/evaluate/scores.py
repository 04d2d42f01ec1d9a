"""What each reported score means, stated once: the validation report and the README print this table, and
the demo summary and `validate`'s log use these names."""
from __future__ import annotations

SCORE_MEANINGS = (
    ("OOF Spearman (all rows)", "the competition metric (mean over the 30 targets of each target's Spearman) over "
     "every out-of-fold row, each predicted by the one fold model that never saw its question, at the fold's kept "
     "epoch: the CV number write-ups quote. With train.keep = last (the default) no epoch was chosen on any rows; with best each fold's epoch was chosen by "
     "its Spearman on these same rows, so this is optimistic (see the last two rows); with train.keep = inner it "
     "was chosen on training questions held out of training, and this is honest. A question with many answers "
     "counts once per answer."),
    ("mean of folds", "each finished fold's Spearman on its own held rows, averaged: noisier than the pooled "
     "number, and what `train` logs per fold."),
    ("unique-question OOF", "question targets scored once per question (its answers' labels and predictions "
     "averaged), answer targets over all rows: repeated questions no longer weigh by their number of answers."),
    ("untouched (held sets)", "the raw predictions scored on the held sets post-processing is judged on "
     "(postprocess.eval_rows = 476 rows each, question-grouped, the size of the competition's test.csv): the "
     "baseline of the next two. It is a mean over 476-row sets, so it differs from the all-rows OOF."),
    ("post-processed, nested", "each held set transformed as chosen on all other rows; a target keeps its "
     "transform when that beats untouched on the held sets. An upper bound: the keep decisions looked at the "
     "held sets."),
    ("keep decision nested too (honest)", "the whole procedure `ensemble` ships (transforms chosen on all other "
     "rows, each kept when its gain clears postprocess.keep_margin) run without each finished fold and scored on "
     "its 476-row sets: what post-processing can be expected to give on a new test set of that size. Its +- is "
     "the estimate's uncertainty: 2 standard errors of the folds' own gains, or with one fold a rule measured on "
     "unseen folds. Quote this one."),
    ("OOF at the last epoch", "the same rows, each fold at its last epoch: no epoch chosen on any rows."),
    ("OOF at the epoch chosen on the other folds (honest)", "each fold at the epoch the other folds score best "
     "on average: no fold's epoch was chosen on its own rows (needs two folds or more). Quote this one, or the "
     "last epoch's, as a score no epoch choice has seen; that epoch count, trained with train.keep = last, is one "
     "honest way to fix the final model's epochs, train.keep = inner (each fold's epoch chosen on training "
     "questions held out of training) the other."),
)

# How a fold's kept epoch was chosen, by train.keep: (a few words for one line, the sentence a report states)
KEPT_EPOCH = {
    "best": ("chosen on the rows that score them",
             "each chosen by its Spearman on the fold's own held rows (train.keep = best): optimistic"),
    "last": ("each fold's last", "each fold's last (train.keep = last): no epoch chosen on any rows"),
    "inner": ("chosen on inner rows, honest", "each chosen by its Spearman on inner rows held out of the fold's "
              "training questions (train.keep = inner): the held rows never chose, so the kept OOF is honest"),
}


def markdown() -> str:
    """The table the report and the README hold."""
    rows = ["| score | what it means |", "|---|---|"]
    return "\n".join(rows + [f"| {name} | {meaning} |" for name, meaning in SCORE_MEANINGS])
