"""What each reported score means, stated once: the validation report and the README print this table, and
the demo summary and `validate`'s log use these names."""
from __future__ import annotations

SCORE_MEANINGS = (
    ("OOF Spearman (all rows)", "the competition metric (mean over the 30 targets of each target's Spearman) over "
     "every out-of-fold row, each predicted by the one fold model that never saw its question: the CV number "
     "write-ups quote. A question with many answers counts once per answer."),
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
    ("keep decision nested too (honest)", "the keep-or-not decision is also made without the held set: what "
     "post-processing can be expected to give on a new test set of that size. Quote this one."),
)


def markdown() -> str:
    """The table the report and the README hold."""
    rows = ["| score | what it means |", "|---|---|"]
    return "\n".join(rows + [f"| {name} | {meaning} |" for name, meaning in SCORE_MEANINGS])
