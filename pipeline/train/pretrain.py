"""`python run.py pretrain`: masked-LM pre-training of the configured backbone on text alone (1st place's
domain pre-training), offline, on whatever text the user has.

Text: the train file's titles, bodies and answers, the test file's, and any pretrain.extra_csv with some of
those columns (a StackExchange dump, say). Only text columns are read, never a target column: a
validation fold's text may be used because no label is seen, and pretrain.json lists every source with its
hash. Documents are each distinct question (title + body) and each distinct answer, cut into windows
(text/masking.py). keras-hub's masked-LM task for the backbone's family learns to predict the masked tokens.
Output: output/pretrained/<name>/, a keras-hub preset (config.json, metadata.json, model.weights.h5) with the
tokenizer beside it, so model.path can point at it; pretrain.json records settings, sources, seeds and the
tokens seen. Every pretrain.checkpoint_every steps the masked-LM weights, optimizer state and step are
written atomically to <name>.checkpoint/; a killed run resumes there, with the same batches and masks
(both are drawn from the seed and the step number).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import files, layout, provenance
from pipeline.core.columns import ANSWER, BODY, TEXT_COLUMNS, TITLE
from pipeline.core.errors import UsageError
from pipeline.data import tables
from pipeline.modeling import device
from pipeline.run.rundir import RunError
from pipeline.text import batching, masking, modeldir, tokenizer as tokenizer_lib
from pipeline.train import progress

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when windows, masks or the checkpoint layout change


def read_text(path: Path, split: str, clean: bool) -> tuple[pd.DataFrame, dict]:
    """The text columns of a CSV (title, body, answer: whichever it has) and its source record. Target columns
    are never loaded, so no label can reach pre-training."""
    path = Path(path)
    if not path.is_file():
        raise tables.DataError(f"pretrain text file not found: {path}")
    header = pd.read_csv(path, nrows=0).columns
    columns = [c for c in TEXT_COLUMNS if c in header]
    if not columns:
        raise tables.DataError(f"{path}: none of the text columns {list(TEXT_COLUMNS)}; pre-training reads only those")
    frame = pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False)
    if clean:
        for c in columns:
            frame[c] = frame[c].map(tables.clean_text)
    return frame, {"split": split, "path": str(path), "sha256": files.sha256_file(path), "rows": len(frame),
                   "columns": columns}


def documents(cfg) -> tuple[list[str], list[dict]]:
    """Distinct questions (title + body) and answers of every configured source, in a fixed order."""
    p = cfg.pretrain
    wanted = [("train", cfg.data_file("train_file"))] * p.use_train + [("test", cfg.data_file("test_file"))] * p.use_test
    wanted += [("extra", cfg.path(f)) for f in p.extra_csv]
    if not wanted:
        raise UsageError("pretrain: no text (pretrain.use_train, pretrain.use_test and pretrain.extra_csv are all off)")
    docs, sources = {}, []
    for split, path in wanted:
        frame, source = read_text(path, split, cfg.data.clean_text)
        before = len(docs)
        if TITLE in frame or BODY in frame:
            question = frame.get(TITLE, "").astype(str) + "\n" + frame.get(BODY, "").astype(str) \
                if TITLE in frame and BODY in frame else frame[TITLE if TITLE in frame else BODY]
            docs.update(dict.fromkeys(t.strip() for t in question))
        if ANSWER in frame:
            docs.update(dict.fromkeys(t.strip() for t in frame[ANSWER]))
        docs.pop("", None)
        sources.append({**source, "new_documents": len(docs) - before})
    return list(docs), sources


def default_name(cfg, info) -> str:
    return cfg.pretrain.name or f"{info.path.name}-mlm-s{cfg.pretrain.seed}"


def masked_lm(backbone):
    """keras-hub's masked-LM task for the backbone's family (its head ties the output to the token embedding)."""
    import keras_hub

    name = type(backbone).__name__.replace("Backbone", "MaskedLM")
    task = getattr(keras_hub.models, name, None)
    if task is None:
        have = sorted(n for n in dir(keras_hub.models) if n.endswith("MaskedLM") and n != "MaskedLM")
        raise UsageError(f"keras-hub has no masked-LM task for {type(backbone).__name__}; families with one: {have}")
    return task(backbone=backbone, preprocessor=None)


class Plan:
    """Which windows make step s, and their masks: a pure function of (seed, step), so a resumed run repeats."""

    def __init__(self, win: masking.Windows, tok, p, batch: int, uses_segments: bool):
        self.win, self.p, self.batch, self.uses_segments, self._plans = win, p, batch, uses_segments, {}
        self.masked: dict[int, int] = {}  # step -> masked tokens, filled as batches are made
        self.steps_per_pass = batching.batches_per_epoch(len(win), batch)
        self.n_predictions = masking.max_predictions(p.max_len, p.mask_rate)
        self.mask_id, self.replacements = tok.mask_id, masking.replacement_ids(tok.vocab_size, tok.special_ids)

    def rows(self, step: int) -> np.ndarray:
        pass_, b = divmod(step, self.steps_per_pass)
        if pass_ not in self._plans:
            self._plans = {pass_: batching.plan(self.win.lengths, self.batch, np.random.default_rng([self.p.seed, pass_]),
                                                bucketing=True)}
        return self._plans[pass_][b]

    def tokens(self, steps: range) -> int:
        return int(sum(self.win.lengths[self.rows(s)].sum() for s in steps))

    def batch_at(self, step: int):
        rows = self.rows(step)
        width = batching.padded_length(int(self.win.lengths[rows].max()), 32, self.p.max_len)
        m = masking.mask_batch(self.win.token_ids[rows, :width], self.win.word_ids[rows, :width],
                               np.random.default_rng([self.p.seed, 1, step]), self.p.mask_rate, self.mask_id,
                               self.replacements, self.n_predictions)
        x = {"token_ids": m["token_ids"], "mask_positions": m["mask_positions"],
             "padding_mask": (np.arange(width)[None, :] < self.win.lengths[rows][:, None]).astype(np.int32)}
        if self.uses_segments:
            x["segment_ids"] = np.zeros_like(m["token_ids"])
        self.masked[step] = int(m["weights"].sum())
        return x, m["labels"], m["weights"]

    def dataset(self, steps: range):
        """The steps' batches: a tf.data pipeline on TensorFlow, a generator of numpy batches on JAX."""
        from pipeline.modeling import backend

        if backend.is_jax():
            return (self.batch_at(s) for s in steps)
        import tensorflow as tf

        names = ["token_ids", "padding_mask", "mask_positions"] + ["segment_ids"] * self.uses_segments
        spec = ({n: tf.TensorSpec((None, None), tf.int32) for n in names}, tf.TensorSpec((None, None), tf.int32),
                tf.TensorSpec((None, None), tf.float32))
        return tf.data.Dataset.from_generator(lambda: (self.batch_at(s) for s in steps), output_signature=spec).prefetch(2)


def pretrain(cfg) -> list[Path]:
    p = cfg.pretrain
    info = modeldir.inspect(cfg.path(cfg.model.path))
    tok = tokenizer_lib.load(info.path)
    if tok.mask_id is None:
        raise UsageError(f"{info.path}: its tokenizer has no mask token, so it cannot be pre-trained as a masked LM")
    if p.max_len > info.max_positions:
        raise UsageError(f"pretrain.max_len = {p.max_len} exceeds the model's {info.max_positions} positions")
    out = layout.pretrained(cfg, default_name(cfg, info))
    docs, sources = documents(cfg)
    settings = {"format": FORMAT_VERSION, "pretrain": dataclasses.asdict(p), "base_model": str(info.path),
                "random_init": cfg.model.random_init, "tokenizer_fingerprint": tok.fingerprint,
                "sources": [(s["path"], s["sha256"]) for s in sources]}
    key = files.sha256_text(json.dumps(settings, sort_keys=True))[:16]
    if out.manifest.is_file():
        done = files.read_json(out.manifest)
        if done.get("key") == key:
            log.info("%s: already pre-trained with these settings and texts", out.root)
            return [out.root]
        raise UsageError(f"{out.root} holds a pre-training with other settings or texts ({out.manifest}); "
                         "set another pretrain.name, or delete it to pre-train again")
    with files.exclusive(out.lock_file, f"{out.checkpoint_dir} is being written by {{holder}}; wait for it to "
                         "finish, or set another pretrain.name", RunError,
                         sweep=lambda: files.temp_files(out.checkpoint_dir)):
        return [_pretrain(cfg, info, tok, docs, sources, key, out)]


def _state_variables(mlm) -> list:
    """What a checkpoint holds: the model's variables (with the dropout generators' states, which weights files
    leave out) and the optimizer's (iterations, moments), in a fixed order."""
    return [*mlm.variables, *mlm.optimizer.variables]


def _pretrain(cfg, info, tok, docs, sources, key: str, out: layout.Pretrained) -> Path:
    import keras

    from pipeline.core import config as config_lib
    from pipeline.modeling import model as model_lib
    from pipeline.train import optim

    p = cfg.pretrain
    state = files.read_json(out.state) if out.state.is_file() else {}
    if state.get("key") != key:  # nothing to resume: a checkpoint of other settings is dropped
        state = {"key": key, "step": 0, "tokens_seen": 0, "masked_tokens": 0, "seconds": 0.0, "history": []}
        for stale in out.checkpoint_dir.glob("step-*.npz"):
            stale.unlink()
    encoded = []
    for start in progress.bar(range(0, len(docs), 2048), "tokenize documents"):
        encoded += tok.encode_words(docs[start:start + 2048])
    win = masking.windows(encoded, tok, p.max_len, p.whole_word)
    strat = device.strategy(cfg.train.strategy)
    policy = device.set_precision(cfg.train.mixed_precision, device.accelerator_kind(strat))
    batch = p.batch_size * strat.num_replicas_in_sync
    plan = Plan(win, tok, p, batch, info.uses_segments)
    total = p.steps or max(1, int(round(p.epochs * plan.steps_per_pass)))
    log.info("pretrain %s: %d documents, %d windows of <= %d tokens, %d steps of %d (%.2f passes), from step %d",
             out.root.name, len(docs), len(win), p.max_len, total, batch, total / plan.steps_per_pass, state["step"])
    keras.utils.set_random_seed(p.seed)
    opt_settings = config_lib.TrainConfig(lr_backbone=p.lr, lr_head=p.lr, warmup=p.warmup, weight_decay=p.weight_decay)
    with strat.scope():
        backbone = model_lib.load_backbone(info.path, cfg.model.random_init, cfg.model.backbone_dropout)
        model_lib.freeze_pooler([backbone])  # the masked-LM loss never reaches BERT's pooler
        mlm = masked_lm(backbone)
        mlm.compile(optimizer=optim.make(opt_settings, total, []), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        mlm.optimizer.build(mlm.trainable_variables)
    if state["step"]:
        with np.load(out.checkpoint(state["step"])) as saved:
            variables = _state_variables(mlm)
            if len(saved.files) != len(variables):
                raise UsageError(f"{out.checkpoint(state['step'])} holds {len(saved.files)} variables, this model "
                                 f"{len(variables)}; delete {out.checkpoint_dir} to start over")
            for i, v in enumerate(variables):
                v.assign(saved[f"v{i}"])
        log.info("resumed from the checkpoint at step %d (%d tokens seen)", state["step"], state["tokens_seen"])
    bar = progress.StepBar(f"pretrain {out.root.name}", total, state["step"], p.verbose)
    for start in range(state["step"], total, p.checkpoint_every):
        steps = range(start, min(start + p.checkpoint_every, total))
        t0 = time.perf_counter()
        history = keras.Model.fit(mlm, plan.dataset(steps), steps_per_epoch=len(steps), epochs=1, verbose=0,
                                  callbacks=[bar])  # Keras' own fit: keras-hub's takes tf.data or grain only
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        tokens, seconds = plan.tokens(steps), time.perf_counter() - t0
        state = {**state, "step": steps.stop, "tokens_seen": state["tokens_seen"] + tokens, "loss": logs["loss"],
                 "masked_tokens": state["masked_tokens"] + sum(plan.masked.pop(s) for s in steps),
                 "seconds": state["seconds"] + seconds, "accuracy": logs.get("accuracy"),
                 "history": state["history"] + [{"step": steps.stop, "loss": logs["loss"], "accuracy": logs.get("accuracy"),
                                                 "tokens_per_s": tokens / seconds}]}
        _checkpoint(out, mlm, state, steps.start)
        bar.checkpoint(state, tokens / seconds)
    bar.close()
    return _finish(cfg, info, tok, backbone, out, sources, state, key, policy, len(docs), len(win), total, batch)


def _checkpoint(out: layout.Pretrained, mlm, state: dict, previous: int):
    """The variables, in a file named by step, then state.json (written last) names that step."""
    with files.atomic_path(out.checkpoint(state["step"]), suffix=".npz") as tmp:
        np.savez(tmp, **{f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(_state_variables(mlm))})
    files.write_json(out.state, state)
    if previous:
        out.checkpoint(previous).unlink(missing_ok=True)


def _finish(cfg, info, tok, backbone, out, sources, state, key, policy, n_docs, n_windows, total, batch) -> Path:
    """The model directory, written whole under a staging name, checked to load, then renamed into place."""
    p = cfg.pretrain
    with files.staged_dir(out.root, out.staging) as staging:
        tok.save(staging)  # first: keras-hub's tokenizer saver also writes metadata.json, the backbone's must win
        backbone.save_to_preset(str(staging))
        config_file = staging / "config.json"  # no training-time dtype policy (as model.json): the loader's applies
        description = json.loads(config_file.read_text())
        description["config"].pop("dtype", None)
        files.write_text(config_file, json.dumps(description, indent=4))
        if tokenizer_lib.load(staging).fingerprint != tok.fingerprint or modeldir.inspect(staging).layout != "keras_hub":
            raise tokenizer_lib.TokenizerError(f"{staging} does not reload as the pre-trained model and its tokenizer")
        files.write_json(layout.Pretrained(staging).manifest, {
            "key": key, "base_model": str(info.path), "family": info.family, "settings": dataclasses.asdict(p),
            "sources": sources, "labels_read": False, "masking": tok.word_marking() if p.whole_word else "token",
            "documents": n_docs, "windows": n_windows, "steps": total, "batch_size": batch, "precision": policy,
            "tokens_seen": state["tokens_seen"], "masked_tokens": state["masked_tokens"], "seconds": state["seconds"],
            "tokens_per_s": state["tokens_seen"] / max(state["seconds"], 1e-9), "final_loss": state.get("loss"),
            "final_accuracy": state.get("accuracy"), "history": state["history"], "seed": p.seed, "command": sys.argv,
            "git_commit": provenance.git_commit(), "versions": provenance.library_versions(),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    shutil.rmtree(out.checkpoint_dir, ignore_errors=True)
    log.info("pretrained %s: %d steps, %d tokens seen (%.0f tokens/s), final masked-LM loss %.3f; use it with "
             "--set model.path=%s", out.root.name, total, state["tokens_seen"],
             state["tokens_seen"] / max(state["seconds"], 1e-9), state.get("loss", float("nan")), out.root)
    return out.root
