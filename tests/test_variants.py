"""The top-10 solutions' modelling choices as configuration: dual inputs, towers, pooling, heads, side
features, target codings, schedules, head-only stages, layer-wise decay, EMA (tiny models)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_config, tiny_train_config
from pipeline.cli import stages
from pipeline.core import files, layout
from pipeline.core.columns import ANSWER_TARGETS, CATEGORIES, ID, QUESTION_TARGETS, TARGETS
from pipeline.core.config import Batching
from pipeline.data import tables
from pipeline.modeling import feeding, model, targets
from pipeline.run import predict
from pipeline.run.rundir import Run
from pipeline.text import batching, encode
from pipeline.train import kfold, optim


@pytest.fixture(scope="module")
def backbone(tiny_model_dir):
    return model.load_backbone(tiny_model_dir, random_init=True)


def _dual_inputs(n=4, q_len=20, a_len=12, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, length in (("question_", q_len), ("answer_", a_len)):
        ids = rng.integers(5, 200, (n, length)).astype("int32")
        mask = np.ones_like(ids)
        mask[0, length // 2:] = 0
        out.update({prefix + "token_ids": ids, prefix + "segment_ids": np.zeros_like(ids),
                    prefix + "padding_mask": mask})
    return out


# ---- encoding and batching ----

def test_dual_encoding_gives_two_sequences_with_their_own_budgets(tmp_path, synth_dir, tiny_model_dir):
    cfg = make_config(tmp_path, synth_dir, tiny_model_dir, encode__inputs="dual", encode__max_len=96,
                      encode__answer_max_len=48, encode__title_weight=10, encode__question_weight=80,
                      encode__answer_weight=30)
    encoder = encode.Encoder.for_model(cfg)
    tok = encoder.tok
    train = tables.load(cfg, "train")
    enc, path = encoder.cached(train, "train")
    assert enc.prefixes == ("question_", "answer_") and enc.seq_lengths.shape == (len(train), 2)
    assert enc.arrays["question_token_ids"].shape[1] == 96 and enc.arrays["answer_token_ids"].shape[1] == 48
    for r in range(len(train)):
        q = enc.arrays["question_token_ids"][r, :enc.seq_lengths[r, 0]].tolist()
        a = enc.arrays["answer_token_ids"][r, :enc.seq_lengths[r, 1]].tolist()
        title = tok.encode_batch([train.question_title[r]])[0]
        for seq in (q, a):  # [CLS] title [SEP] text [SEP], the title in both
            assert seq[0] == tok.cls_id and seq[-1] == tok.sep_id and seq.count(tok.sep_id) == 2
            if len(title) <= 5:
                assert seq[1:1 + len(title)] == title
        for prefix, s in (("question_", 0), ("answer_", 1)):
            assert enc.arrays[prefix + "padding_mask"][r].sum() == enc.seq_lengths[r, s]
    assert (enc.seq_lengths[:, 0] == 96).any() and (enc.seq_lengths[:, 1] == 48).any()  # both sequences truncate
    again, path2 = encoder.cached(train, "train")
    assert path2 == path and all(np.array_equal(again.arrays[k], enc.arrays[k]) for k in enc.arrays)
    fields = [t["field"] for t in encode.truncation_table(enc, tok, cfg.encode)]
    assert fields == ["question_question_title", "question_question_body", "answer_question_title", "answer_answer"]


def test_each_sequence_is_cut_to_its_own_longest_row():
    lengths = np.array([[30, 5], [10, 40], [12, 7]])
    arrays = {"question_token_ids": np.ones((3, 64), "int32"), "answer_token_ids": np.ones((3, 48), "int32"),
              "question_padding_mask": np.ones((3, 64), "int32"), "answer_padding_mask": np.ones((3, 48), "int32"),
              "host_ids": np.arange(3, dtype="int32")[:, None]}
    feed = batching.Feed(arrays, lengths, ("question_", "answer_"))
    batch = feed.batch(np.array([0, 2]), dynamic=True, multiple=8)
    assert batch["question_token_ids"].shape == (2, 32) and batch["answer_token_ids"].shape == (2, 8)
    assert batch["host_ids"].shape == (2, 1)
    assert feed.batch(np.array([1]), dynamic=True, multiple=8)["answer_padding_mask"].shape == (1, 40)
    assert feed.batch(np.array([0]), dynamic=False, multiple=8)["question_token_ids"].shape == (1, 64)


def test_training_batches_are_sliced_by_tf_data_and_cover_every_row():
    rng = np.random.default_rng(0)
    n = 50
    lengths = np.column_stack([rng.integers(3, 60, n), rng.integers(3, 30, n)])
    arrays = {"question_token_ids": (np.arange(n)[:, None] + np.zeros((1, 64))).astype("int32"),
              "answer_token_ids": np.zeros((n, 32), "int32"), "host_ids": np.arange(n, dtype="int32")[:, None]}
    y = np.arange(n, dtype="float32")[:, None] / n
    feed = batching.Feed(arrays, lengths, ("question_", "answer_"))
    ds = feeding.train_dataset(feed, y, 8, seed=3, shape=Batching(pad_multiple=8))
    epoch = iter(ds)  # endless: two epochs of batches_per_epoch each cover every row once, shaped per sequence
    for _ in range(2):
        seen = []
        for x, yb in (next(epoch) for _ in range(batching.batches_per_epoch(n, 8))):
            rows = x["host_ids"].numpy()[:, 0]
            seen += rows.tolist()
            assert (x["question_token_ids"].numpy()[:, 0] == rows).all() and np.allclose(yb.numpy()[:, 0], rows / n)
            assert x["question_token_ids"].shape[1] == batching.padded_length(lengths[rows, 0].max(), 8, 64)
            assert x["answer_token_ids"].shape[1] == batching.padded_length(lengths[rows, 1].max(), 8, 32)
        assert sorted(seen) == list(range(n))


# ---- model variants ----

@pytest.mark.parametrize("towers", ["shared", "separate"])
def test_dual_towers(backbone, tiny_model_dir, towers):
    other = model.load_backbone(tiny_model_dir, random_init=True) if towers == "separate" else None
    m = model.QuestModel(backbone, other, inputs="dual", dropout=0.0)
    assert sorted(i.name for i in m.inputs) == sorted(f"{p}{n}" for p in ("question_", "answer_")
                                                      for n in ("token_ids", "segment_ids", "padding_mask"))
    n_backbone = len(backbone.weights)
    assert len(m.weights) - len(model.head_variables(m)) == n_backbone * (2 if towers == "separate" else 1)
    x = _dual_inputs()
    out = np.asarray(m(x))
    assert out.shape == (4, 30) and ((out > 0) & (out < 1)).all()
    changed = {k: v.copy() for k, v in x.items()}  # only padded positions of row 0, in both sequences
    changed["question_token_ids"][0, 10:] = 7
    changed["answer_token_ids"][0, 6:] = 7
    assert np.allclose(m(x), m(changed), atol=1e-6)
    real = {k: v.copy() for k, v in x.items()}
    real["answer_token_ids"][1, :3] = 9
    assert not np.allclose(m(x), m(real), atol=1e-6)  # the answer sequence is read


def test_split_heads_keep_question_targets_on_the_question_side(backbone):
    m = model.QuestModel(backbone, inputs="dual", split_heads=True, head="per_target", head_hidden=8, dropout=0.0)
    x = _dual_inputs()
    y = {k: v.copy() for k, v in x.items()}
    y["answer_token_ids"][:, :4] = 11
    before, after = np.asarray(m(x)), np.asarray(m(y))
    q, a = len(QUESTION_TARGETS), len(ANSWER_TARGETS)
    assert np.allclose(before[:, :q], after[:, :q], atol=1e-6)  # question targets never see the answer
    assert not np.allclose(before[:, q:], after[:, q:], atol=1e-6) and q + a == 30
    hidden = [v for v in model.head_variables(m) if "hidden_" in v.path and v.path.endswith("kernel")]
    assert len(hidden) == 30 and {tuple(v.shape)[1] for v in hidden} == {8}  # one small head per target


def test_cls_all_layers_weighs_every_layer(backbone):
    m = model.QuestModel(backbone, pooling="cls_all_layers")
    logits = [v for v in m.weights if "layer_logits" in v.path]
    assert len(logits) == 1 and logits[0].shape == (len(model.hidden_state_layers(backbone)),)
    x = {"token_ids": np.full((2, 16), 9, "int32"), "segment_ids": np.zeros((2, 16), "int32"),
         "padding_mask": np.ones((2, 16), "int32")}
    assert np.asarray(m(x)).shape == (2, 30)


@pytest.mark.parametrize("samples", [1, 4])
def test_per_target_heads_with_multi_sample_dropout(backbone, samples):
    m = model.QuestModel(backbone, head="per_target", head_hidden=8, dropout=0.3, dropout_samples=samples)
    x = {"token_ids": np.full((3, 16), 9, "int32"), "segment_ids": np.zeros((3, 16), "int32"),
         "padding_mask": np.ones((3, 16), "int32")}
    assert np.allclose(m(x, training=False), m(x, training=False))
    assert not np.allclose(m(x, training=True), m(x, training=True))


def test_side_features_map_unseen_values_to_one_bucket(backbone):
    m = model.QuestModel(backbone, categories=list(CATEGORIES), host_vocab=["a.com", "b.com"], host_dim=4,
                         dropout=0.0)
    frame = pd.DataFrame({"category": ["SCIENCE", "NEW", "CULTURE"], "host": ["b.com", "a.com", "zzz.org"]})
    side = m.side_arrays(frame)
    assert side["category_ids"][:, 0].tolist() == [3, 0, 1] and side["host_ids"][:, 0].tolist() == [2, 1, 0]
    x = {"token_ids": np.full((3, 16), 9, "int32"), "segment_ids": np.zeros((3, 16), "int32"),
         "padding_mask": np.ones((3, 16), "int32"), **side}
    out = np.asarray(m(x))
    assert not np.allclose(out[0], out[1], atol=1e-6)  # same text, other category and host: other prediction
    with pytest.raises(ValueError, match="need a 'host' column"):
        m.side_arrays(frame[["category"]])


# ---- target codings and loss ----

@pytest.mark.parametrize("kind", ["raw", "rank", "ordinal"])
def test_target_codings_invert_to_the_labels(kind):
    rng = np.random.default_rng(0)
    y = rng.choice([0.0, 1 / 3, 0.5, 2 / 3, 1.0], size=(200, 30))
    y[:, 19] = 0.0  # a constant column
    coding = targets.fit(kind, y)
    t = coding.encode(y)
    assert t.shape == (200, sum(coding.units())) and t.min() >= 0 and t.max() <= 1
    assert np.allclose(coding.decode(t), y, atol=1e-6)  # exact targets come back as the labels
    p = coding.decode(rng.random(t.shape))  # any outputs: 30 columns in [0, 1]
    assert p.shape == (200, 30) and p.min() >= 0 and p.max() <= 1
    if kind == "ordinal":
        assert coding.units()[0] == 4 and coding.units()[19] == 1
    clone = targets.TargetCoding.from_dict(json.loads(json.dumps(coding.to_dict())))
    assert np.allclose(clone.decode(t), y, atol=1e-6)


def test_rank_coding_is_monotone_and_ordinal_is_the_expected_value():
    y = np.array([[0.0], [0.0], [0.5], [1.0]])
    rank = targets.fit("rank", y)
    assert rank.encode(y)[:, 0].tolist() == pytest.approx([0.0, 0.0, (3 - 1.5) / 2.5, 1.0])
    ordinal = targets.fit("ordinal", y)
    assert ordinal.decode(np.array([[0.5, 0.5]]))[0, 0] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


def test_pos_weight_weighs_positive_terms():
    import keras

    coding = targets.fit("raw", np.zeros((2, 30)))
    y_true, y_pred = np.ones((4, 30), "float32"), np.full((4, 30), 0.3, "float32")
    plain = float(keras.ops.mean(kfold.loss_function(coding, [])(y_true, y_pred)))
    weighted = float(keras.ops.mean(kfold.loss_function(coding, [3.0])(y_true, y_pred)))
    assert weighted == pytest.approx(3 * plain, rel=1e-4)
    per_column = np.ones(30)
    per_column[0] = 2.0
    loss = kfold.loss_function(coding, per_column.tolist())(np.ones((1, 30), "float32"), np.full((1, 30), 0.3, "float32"))
    assert float(loss[0]) == pytest.approx(plain * 31 / 30, rel=1e-4)


# ---- schedules, frozen stages, layer-wise decay, EMA ----

def test_schedules_warm_up_and_decay():
    for kind in ("linear", "cosine", "one_cycle"):
        s = optim.WarmupSchedule(1.0, 10, 110, kind)
        values = [float(s(i)) for i in (0, 10, 60, 110)]
        assert values[1] == pytest.approx(1.0) and values[0] < 0.05 and values[-1] < 0.05, kind
    assert float(optim.WarmupSchedule(1.0, 10, 110, "cosine")(60)) == pytest.approx(0.5, abs=1e-6)
    one_cycle = optim.WarmupSchedule(1.0, 10, 110, "one_cycle")  # 6th place's cycle: peak/25 at both ends
    assert float(one_cycle(0)) == pytest.approx(1 / 25) and float(one_cycle(110)) == pytest.approx(1 / 25)
    constant = optim.WarmupSchedule(1.0, 10, 110, "constant")
    assert [float(constant(i)) for i in (5, 10, 60, 110)] == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_head_only_stage_at_its_own_constant_rate():
    from pipeline.core import config

    tcfg = config.TrainConfig(lr_backbone=2e-5, lr_head=1e-3, head_only_lr=1e-5, schedule="one_cycle", warmup=0.3)
    s = optim.WarmupSchedule(**optim.make(tcfg, 50, head_vars=[], head_only=True).get_config()["learning_rate"]["config"])
    assert [float(s(i)) for i in (0, 25, 50)] == pytest.approx([1e-5] * 3)
    s = optim.WarmupSchedule(**optim.make(tcfg, 50, head_vars=[]).get_config()["learning_rate"]["config"])
    assert s.kind == "one_cycle" and s.peak == 2e-5  # the fine-tuning stage keeps the recipe's schedule


def test_weight_decay_follows_each_groups_learning_rate(backbone):
    """PyTorch's AdamW decays each parameter group at its own rate; Keras' at the base rate for every variable."""
    import keras

    from pipeline.core import config

    m = model.QuestModel(backbone)
    tcfg = config.TrainConfig(lr_backbone=1e-3, lr_head=1e-1, weight_decay=0.5, warmup=0.0, schedule="constant")
    opt = optim.make(tcfg, 10, model.head_variables(m))
    head = m.get_layer("head").dense.kernel
    body = model.hidden_state_layers(backbone)[-1].trainable_variables[0]
    assert "bias" not in body.path and "norm" not in body.path
    opt.build(m.trainable_variables)
    before = {"head": head.numpy().copy(), "body": body.numpy().copy()}
    opt.apply([keras.ops.zeros_like(v) for v in m.trainable_variables], m.trainable_variables)  # decay alone
    assert head.numpy() == pytest.approx(before["head"] * (1 - 0.1 * 0.5), rel=1e-5)
    assert body.numpy() == pytest.approx(before["body"] * (1 - 1e-3 * 0.5), rel=1e-5)


def test_no_warm_up_starts_at_the_peak_and_a_too_long_one_is_scaled(caplog):
    from pipeline.core import config

    for kind in ("linear", "cosine", "one_cycle"):
        assert float(optim.WarmupSchedule(1.0, 0, 100, kind)(0)) == pytest.approx(1.0), kind
    tcfg = config.TrainConfig(warmup=0.1, warmup_steps=200, schedule="linear")  # a recipe's 200 steps, a 126-step run
    assert optim.warmup_steps(tcfg, 126) == 13
    assert "train.warmup_steps = 200 is not shorter than this stage's 126 optimizer steps" in caplog.text
    schedule = optim.make(tcfg, 126, head_vars=[]).get_config()["learning_rate"]["config"]
    s = optim.WarmupSchedule(**schedule)
    assert float(s(13)) == pytest.approx(s.peak) and float(s(120)) < 0.1 * s.peak  # it peaks, then decays


def test_warmup_in_steps_overrides_the_share(tiny_model_dir):
    from pipeline.core import config

    tcfg = config.TrainConfig(warmup=0.5, warmup_steps=7, schedule="cosine")
    opt = optim.make(tcfg, 100, head_vars=[])
    schedule = opt.get_config()["learning_rate"]["config"]
    assert schedule["warmup_steps"] == 7 and schedule["kind"] == "cosine"


def _fit_steps(m, opt, steps=3):
    import keras

    m.compile(optimizer=opt, loss=keras.losses.BinaryCrossentropy())
    x = {"token_ids": np.random.default_rng(0).integers(5, 200, (8 * steps, 16)).astype("int32"),
         "segment_ids": np.zeros((8 * steps, 16), "int32"), "padding_mask": np.ones((8 * steps, 16), "int32")}
    m.fit(x, np.random.default_rng(1).random((8 * steps, 30)).astype("float32"), batch_size=8, epochs=1, verbose=0)


def test_head_only_stage_leaves_the_backbone_unchanged(tiny_model_dir):
    from pipeline.core import config

    m = model.QuestModel(model.load_backbone(tiny_model_dir, random_init=True))
    before = [v.numpy().copy() for v in m.backbone.weights]
    head_before = [v.numpy().copy() for v in model.head_variables(m)]
    m.freeze_backbones(True)
    tcfg = config.TrainConfig(lr_backbone=1e-2, lr_head=1e-2, warmup=0.0, weight_decay=0.1)
    _fit_steps(m, optim.make(tcfg, 3, model.head_variables(m), head_only=True))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, m.backbone.weights))
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(head_before, model.head_variables(m)))
    m.freeze_backbones(False)  # the next stage trains it again (the unused BERT pooler stays frozen)
    assert m.backbone.trainable_variables and not any("pooled_dense" in v.path for v in m.trainable_variables)


def test_a_frozen_backbone_runs_without_dropout(tiny_model_dir):
    """Head-only stages read the backbone's features as at inference (6th place: eval-mode features)."""
    import keras

    backbone = model.load_backbone(tiny_model_dir, random_init=True)
    m = model.QuestModel(backbone)
    x = {"token_ids": np.random.default_rng(0).integers(5, 200, (4, 16)).astype("int32"),
         "segment_ids": np.zeros((4, 16), "int32"), "padding_mask": np.ones((4, 16), "int32")}
    features = lambda: keras.ops.convert_to_numpy(backbone(x, training=True)["sequence_output"])  # noqa: E731
    rates = [layer.rate for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.Dropout)]
    assert rates and max(rates) > 0 and not np.allclose(features(), features())  # dropout while training
    m.freeze_backbones(True)
    assert np.array_equal(features(), features())
    m.freeze_backbones(False)
    assert [layer.rate for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.Dropout)] == rates


def test_first_place_pooling_weighs_every_hidden_state_with_its_own_cls_dropout(backbone):
    """cls_all_states: the embeddings' output and every layer (13 states in BERT-base, 3 here), weights starting
    at -3 with the top layer's at 0, each state's [CLS] dropped out on its own; rebuilt from its description."""
    m = model.QuestModel(backbone, pooling="cls_all_states", layer_dropout=0.2)
    logits = m.get_layer("layer_weights").get_weights()[0]
    assert logits.tolist() == [-3.0] * len(model.hidden_state_layers(backbone)) + [0.0]
    drops = [layer for layer in m.layers if layer.name.startswith("layer_dropout_")]
    assert len(drops) == len(logits) and {d.rate for d in drops} == {0.2}
    x = {"token_ids": np.random.default_rng(0).integers(5, 200, (2, 12)).astype("int32"),
         "segment_ids": np.zeros((2, 12), "int32"), "padding_mask": np.ones((2, 12), "int32")}
    rebuilt = model.model_from_json(model.model_to_json(m))
    rebuilt.set_weights(m.get_weights())
    np.testing.assert_allclose(np.asarray(rebuilt(x)), np.asarray(m(x)), atol=1e-6)
    equal = model.QuestModel(backbone, pooling="cls_all_layers")
    assert equal.get_layer("layer_weights").get_weights()[0].tolist() == [0.0] * len(model.hidden_state_layers(backbone))
    assert "layer_dropout" not in equal.settings  # descriptions of runs from before it stay as they were


def test_layer_wise_decay_scales_lower_layers(backbone):
    m = model.QuestModel(backbone)
    factors = model.layer_multipliers(m, 0.5)
    layers = model.hidden_state_layers(backbone)
    top, bottom = layers[-1].trainable_variables[0], layers[0].trainable_variables[0]
    embedding = backbone.get_layer("token_embedding").trainable_variables[0]
    assert (factors[id(top)], factors[id(bottom)], factors[id(embedding)]) == (1.0, 0.5, 0.25)
    assert not set(factors) & {id(v) for v in model.head_variables(m)}
    from pipeline.core import config

    opt = optim.make(config.TrainConfig(lr_backbone=1e-4, lr_head=1e-3), 10, model.head_variables(m), factors)
    opt.build(m.trainable_variables)
    assert opt._multiplier(embedding) == pytest.approx(0.25) and opt._multiplier(top) == pytest.approx(1.0)
    assert opt._multiplier(model.head_variables(m)[0]) == pytest.approx(10.0)


def test_ema_weights_are_evaluated_and_kept(tiny_model_dir):
    """With train.ema the epoch is scored on the moving averages and those (not the raw weights) are restored."""
    from pipeline.core import config

    m = model.QuestModel(model.load_backbone(tiny_model_dir, random_init=True))
    tcfg = config.TrainConfig(lr_backbone=1e-2, lr_head=1e-2, ema=0.5, keep="last", eval_batch_size=8)
    opt = optim.make(tcfg, 3, model.head_variables(m))
    n = 8
    feed = batching.Feed({"token_ids": np.full((n, 16), 9, "int32"), "segment_ids": np.zeros((n, 16), "int32"),
                          "padding_mask": np.ones((n, 16), "int32")}, np.full((n, 1), 16))
    callback = kfold.epoch_eval(tcfg, feed, np.random.default_rng(2).random((n, 30)))
    import keras

    m.compile(optimizer=opt, loss=keras.losses.BinaryCrossentropy())
    seen = {}

    class Record(keras.callbacks.Callback):  # runs after the evaluation, before fit's own end
        def on_epoch_end(self, epoch, logs=None):
            seen["raw"] = [v.numpy().copy() for v in opt._trainable_variables]
            seen["averages"] = [v.numpy().copy() for v in opt._model_variables_moving_average]

    x = {k: np.repeat(v, 3, axis=0) for k, v in feed.arrays.items()}
    m.fit(x, np.random.default_rng(1).random((3 * n, 30)).astype("float32"), batch_size=8, epochs=1, verbose=0,
          callbacks=[callback, Record()])
    assert any(not np.allclose(r, a) for r, a in zip(seen["raw"], seen["averages"]))  # EMA is not the raw model
    for v, r in zip(opt._trainable_variables, seen["raw"]):
        v.assign(r)
    callback.restore()  # what train_fold saves
    assert all(np.allclose(v.numpy(), a) for v, a in zip(opt._trainable_variables, seen["averages"]))


# ---- end to end: every choice recorded in the run, rebuilt from the run directory alone ----

VARIANT = dict(encode__inputs="dual", encode__max_len=64, encode__answer_max_len=48, model__towers="separate",
               model__pooling="cls_all_layers", model__head="per_target", model__head_hidden=16,
               model__split_heads="true", model__dropout_samples=2, model__category="true", model__host_dim=4,
               train__targets="ordinal", train__pos_weight="[1.5]", train__schedule="one_cycle",
               train__warmup_steps=2, train__head_only_epochs=1, train__head_only_stage="last",
               train__lr_layer_decay=0.8, train__ema=0.9, train__epochs=1)


@pytest.mark.slow
def test_a_variant_run_predicts_from_its_run_directory_alone(tmp_path, synth_dir, tiny_model_dir):
    cfg = tiny_train_config(tmp_path, synth_dir, tiny_model_dir, train__folds="0", **VARIANT)
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    run = layout.RunPaths(run_dir)
    description = json.loads(run.model.read_text())["config"]
    assert description["inputs"] == "dual" and description["answer_backbone"] and description["split_heads"]
    assert description["categories"] == list(CATEGORIES) and description["host_vocab"]
    coding = files.read_json(run.fold(0).coding)
    assert coding["kind"] == "ordinal" and len(coding["values"]) == 30
    history = pd.read_csv(run.fold(0).history)
    assert history["stage"].tolist() == ["finetune", "head_only"]  # one fine-tuning epoch, then the head-only stage
    assert history["lr_backbone"].iloc[0] > 0 and history["lr_backbone"].iloc[1] == 0  # frozen: no backbone rate
    assert (history["train_seconds"] > 0).all()
    test = tables.load(cfg, "test")
    fresh = predict.predict_run(run_dir, cfg.data_file("test_file"), out_dir=tmp_path / "p", reuse=False)
    mine = pd.read_csv(fresh).set_index(ID)[list(TARGETS)]
    saved = pd.read_csv(run.fold(0).test).set_index(ID).loc[test[ID], list(TARGETS)]
    assert np.allclose(mine.to_numpy(), saved.to_numpy(), atol=1e-5)
    assert mine.to_numpy().min() >= 0 and mine.to_numpy().max() <= 1
    cfg2 = Run(run_dir).load_config()
    assert (cfg2.encode.inputs, cfg2.train.targets, cfg2.train.ema) == ("dual", "ordinal", 0.9)


@pytest.mark.slow
def test_minilm_dual_shared_tower_run(tmp_path, minilm_dir, toy_dir):
    """The real backbone on real rows: a siamese (shared-tower) dual run trains a fold and predicts."""
    cfg = tiny_train_config(tmp_path, toy_dir, minilm_dir, toy=True, encode__inputs="dual", encode__max_len=64,
                            encode__answer_max_len=48, encode__title_weight=8, encode__question_weight=56,
                            encode__answer_weight=40, model__random_init="false", train__epochs=1,
                            train__batch_size=8, train__lr_backbone=5e-5, train__lr_head=1e-3, train__folds="0")
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    m = Run(run_dir).load_fold(0)
    assert m.answer_backbone is None and type(m.backbone).__name__ == "BertBackbone" and m.backbone.num_layers == 6
    metrics = files.read_json(layout.RunPaths(run_dir).fold(0).metrics)
    assert np.isfinite(metrics["val_spearman"])
    oof = pd.read_csv(layout.RunPaths(run_dir).fold(0).oof)
    assert oof[list(TARGETS)].std().gt(0).sum() >= 25  # the predictions vary over the rows
