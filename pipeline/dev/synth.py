"""Seeded generator of QUEST-shaped competition files with learnable text-target signal.

Shape follows the real data: 41/11/31 columns, several answers per question, hosts and
categories, rater-style discrete targets (k/3, 1/2 ...), token lengths with median ~325,
p75 ~580, p90 ~880 for title+body+answer, plus some empty and very long texts. Each target is a
noisy function of a few latent factors, and each factor shows up in the text as extra
occurrences of its own marker words, so a model that reads the text can learn the targets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import files
from pipeline.core.columns import ID, QUESTION_TARGETS, SUBMISSION_COLUMNS, TARGETS

HOSTS = {
    "STACKOVERFLOW": ["stackoverflow.com"],
    "TECHNOLOGY": ["superuser.com", "serverfault.com", "electronics.stackexchange.com", "apple.stackexchange.com"],
    "SCIENCE": ["math.stackexchange.com", "physics.stackexchange.com", "stats.stackexchange.com"],
    "CULTURE": ["english.stackexchange.com", "rpg.stackexchange.com", "scifi.stackexchange.com"],
    "LIFE_ARTS": ["photo.stackexchange.com", "cooking.stackexchange.com", "diy.stackexchange.com"],
}
N_FACTORS = 8
# Common English words: one WordPiece token each in any English vocabulary, so token lengths follow
# the word counts drawn below under the real tokenizers too.
_FILLER = """the of and to in is it you that he was for on are as with his they at be this from have or by
one had not but what all were when we there can an your which their said if do will each about how up out them
then she many some so these would other into has more her two like him see time could no make than first been
its who now people my made over did down only way find use may water long little very after words called just
where most know get through back much before go good new write our used me man too any day same right look
think also around another came come work three word must because does part even place well such here take why
things help put years different away again off went old number great tell men say small every found still
between name should home big give air line set own under read last never us left end along while might next
sound below saw something thought both few those always looked show large often together asked house world
going want school important until form food keep children feet land side without boy once animals life enough
took sometimes four head above kind began almost live page got earth need far hand high year mother light
parts country father let night following picture being study second eyes soon times story boys since white
days paper hard near sentence better best across during today others however sure means knew try told young
miles sun ways thing whole hear example heard several change answer room sea against top turned learn point
city play toward five using himself usually money seen car morning given body family later move face door""".split()
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "de", "fi", "gu", "ho", "ja",
              "bel", "cor", "dan", "eth", "gor", "lin", "mar", "nor", "pel", "ris", "tan", "ver"]


def _words(rng: np.random.Generator, n: int, lo: int = 2, hi: int = 4) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(_SYLLABLES, rng.integers(lo, hi + 1))))
    return sorted(out)


def _lengths(rng, n, median, sigma, cap):
    return np.clip(rng.lognormal(np.log(median), sigma, n), 1, cap).astype(int)


def _text(rng, n_words, factors, filler, markers):
    """Filler text in which factor k's marker words appear at a rate rising steeply with factors[k]."""
    words = list(rng.choice(filler, n_words))
    rates = 0.08 / (1.0 + np.exp(-3.0 * factors))
    for k, count in enumerate(rng.poisson(rates * max(n_words, 8))):
        for pos in rng.integers(0, max(n_words, 1), count):
            words.insert(int(pos), str(rng.choice(markers[k])))
    sentences, i = [], 0
    while i < len(words):
        step = int(rng.integers(6, 18))
        s = " ".join(words[i:i + step])
        sentences.append(s[:1].upper() + s[1:] + rng.choice([".", ".", "?", "!"]))
        i += step
    return " ".join(sentences)


def _rated(rng, logits):
    """Average of 2-5 raters' votes, each positive with probability sigmoid(logit): QUEST-like values."""
    n_raters = rng.choice([2, 3, 3, 3, 5], size=logits.shape[0])[:, None]
    p = 1.0 / (1.0 + np.exp(-logits))
    votes = rng.binomial(n_raters, p)
    return votes / n_raters


TASK_SEED = 2019  # fixes the "language" and the text->target rules; the data seed only draws samples


def _task():
    """Marker words per latent factor, factor->target weights and target biases: one fixed task."""
    rng = np.random.default_rng(TASK_SEED)
    markers = [_words(rng, 12, 2, 2) for _ in range(N_FACTORS)]
    weights = rng.normal(0, 1.2, (N_FACTORS, len(TARGETS))) * (rng.random((N_FACTORS, len(TARGETS))) < 0.35)
    weights[rng.integers(0, N_FACTORS, len(TARGETS)), np.arange(len(TARGETS))] += rng.choice([-3.0, 3.0], len(TARGETS))
    return _FILLER, markers, weights, rng.normal(0.5, 1.5, len(TARGETS))


def generate(n_train: int = 600, n_test: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (train, test, sample_submission) frames in the competition schema."""
    filler, markers, weights, bias = _task()
    rng = np.random.default_rng(seed)
    categories = list(HOSTS)
    rows, qa_id, q = [], 0, 0
    n_total = n_train + n_test
    while len(rows) < n_total:
        q_factors = rng.normal(0, 1, N_FACTORS)
        category = categories[int(rng.integers(len(categories)))]
        host = str(rng.choice(HOSTS[category]))
        title = _text(rng, int(rng.integers(4, 16)), q_factors, filler, markers).rstrip(".?!") + "?"
        body_len = int(_lengths(rng, 1, 110, 0.85, 3000)[0]) if rng.random() > 0.01 else 0
        body = _text(rng, body_len, q_factors, filler, markers) if body_len else ""
        n_answers = 1 if len(rows) >= n_train else int(min(rng.geometric(0.55), 6))
        for _ in range(n_answers):
            a_factors = 0.6 * q_factors + 0.8 * rng.normal(0, 1, N_FACTORS)
            a_len = int(_lengths(rng, 1, 88, 0.9, 3000)[0]) if rng.random() > 0.01 else 0
            logits = np.where(np.isin(TARGETS, QUESTION_TARGETS), q_factors @ weights, a_factors @ weights) + bias
            rows.append({
                ID: qa_id, "question_title": title, "question_body": body,
                "question_user_name": f"user{q}", "question_user_page": f"https://{host}/users/{q}",
                "answer": _text(rng, a_len, a_factors, filler, markers) if a_len else "",
                "answer_user_name": f"user{10_000 + qa_id}", "answer_user_page": f"https://{host}/users/{10_000 + qa_id}",
                "url": f"http://{host}/questions/{q}", "category": category, "host": host,
                "_logits": logits,
            })
            qa_id += 1
        q += 1
    frame = pd.DataFrame(rows[:n_total])
    logits = np.stack(frame.pop("_logits").to_numpy())
    question_ids = frame["url"].to_numpy()
    values = _rated(rng, logits)
    # Question targets are rated once per question: copy the first answer's values to its siblings.
    first = pd.Series(np.arange(len(frame))).groupby(question_ids).transform("first").to_numpy()
    is_q = np.isin(TARGETS, QUESTION_TARGETS)
    values[:, is_q] = values[first][:, is_q]
    targets = pd.DataFrame(np.round(values, 6), columns=list(TARGETS))
    train = pd.concat([frame.iloc[:n_train].reset_index(drop=True), targets.iloc[:n_train].reset_index(drop=True)], axis=1)
    test = frame.iloc[n_train:].reset_index(drop=True)
    sample = pd.DataFrame({ID: test[ID]})
    for col in SUBMISSION_COLUMNS[1:]:
        sample[col] = 0.00308  # the constant the real sample submission uses
    return train, test, sample


def write(out_dir: str | Path, n_train: int = 600, n_test: int = 120, seed: int = 0) -> dict[str, Path]:
    """Write train.csv, test.csv and sample_submission.csv into out_dir (atomic)."""
    out_dir = Path(out_dir)
    train, test, sample = generate(n_train, n_test, seed)
    return {
        "train": files.write_csv(out_dir / "train.csv", train),
        "test": files.write_csv(out_dir / "test.csv", test),
        "sample_submission": files.write_csv(out_dir / "sample_submission.csv", sample),
    }
