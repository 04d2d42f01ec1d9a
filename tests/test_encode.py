import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_config
from pipeline.data import tables
from pipeline.dev import synth
from pipeline.text import encode, tokenizer


def test_allocate_flows_unused_budget():
    assert encode.allocate([5, 500, 500], [30, 239, 239], 508) == [5, 252, 251]
    assert encode.allocate([5, 10, 600], [30, 239, 239], 508) == [5, 10, 493]
    assert encode.allocate([40, 300, 10], [30, 239, 239], 508) == [40, 300, 10]
    assert sum(encode.allocate([100, 900, 900], [30, 239, 239], 508)) == 508


def test_head_tail_keeps_both_ends():
    ids = list(range(100))
    assert encode.head_tail(ids, 10, 0.5) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert encode.head_tail(ids, 10, 1.0) == list(range(10))
    assert encode.head_tail(ids, 10, 0.0) == list(range(90, 100))
    assert encode.head_tail(ids[:5], 10, 0.5) == ids[:5]


def _fake_tok(double_sep=False):
    return SimpleNamespace(cls_id=1, sep_id=2, pad_id=0, double_sep=double_sep)


def _settings(**kw):
    base = dict(inputs="joint", mode="triple", max_len=16, answer_max_len=16, title_weight=2, question_weight=5,
                answer_weight=5, head_share=0.5, title_floor=0)
    return SimpleNamespace(**{**base, **kw})


def _assemble(fields, tok, settings, uses_segments):
    """Each sequence of the settings' layout, arrays by input name plus its lengths."""
    out = {}
    for spec in encode.sequence_specs(settings):
        arrays, lengths = encode.assemble(fields, tok, spec, settings.head_share, uses_segments)
        out.update(arrays, **{spec.prefix + "lengths": lengths})
    return out


def test_assemble_triple_layout_and_segments():
    fields = [[[10, 11]], [[20, 21, 22]], [[30, 31, 32, 33]]]
    out = _assemble(fields, _fake_tok(), _settings(), uses_segments=True)
    assert out["token_ids"][0].tolist() == [1, 10, 11, 2, 20, 21, 22, 2, 30, 31, 32, 33, 2, 0, 0, 0]
    assert out["segment_ids"][0].tolist() == [0] * 8 + [1] * 5 + [0] * 3
    assert out["padding_mask"][0].tolist() == [1] * 13 + [0] * 3 and out["lengths"][0] == 13
    flat = _assemble(fields, _fake_tok(), _settings(), uses_segments=False)
    assert flat["segment_ids"].sum() == 0


def test_assemble_roberta_pair_layout_and_truncation():
    fields = [[[10]], [[20, 21]], [list(range(30, 60))]]
    out = _assemble(fields, _fake_tok(double_sep=True), _settings(mode="pair"), uses_segments=False)
    row = out["token_ids"][0].tolist()
    assert row[:6] == [1, 10, 20, 21, 2, 2] and row[-1] == 2 and len(row) == 16
    assert row[6:8] == [30, 31] and row[-3:-1] == [58, 59]  # answer head and tail kept


def _triple_parts(tok, ids):
    cut = [i for i, t in enumerate(ids) if t == tok.sep_id]
    return tok.decode(ids[1:cut[0]]), tok.decode(ids[cut[0] + 1:cut[1]]), tok.decode(ids[cut[1] + 1:cut[2]])


def test_real_rows_round_trip_with_minilm(tmp_path, toy_dir, minilm_dir):
    cfg = make_config(tmp_path, toy_dir, minilm_dir, toy=True, encode__max_len=128,
                      encode__title_weight=10, encode__question_weight=50, encode__answer_weight=64)
    train = tables.load(cfg, "train")
    encoder = encode.Encoder.for_model(cfg)
    tok = encoder.tok
    enc, path = encoder.cached(train, "train")
    token_ids, segment_ids = enc.arrays["token_ids"], enc.arrays["segment_ids"]
    assert token_ids.dtype == np.int32 and token_ids.shape == (50, 128) and enc.seq_lengths.shape == (50, 1)
    for r in range(len(train)):
        ids = token_ids[r, :enc.lengths[r]].tolist()
        title, body, answer = _triple_parts(tok, ids)
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        n_title = len(tok.encode_batch([train.question_title[r]])[0])
        if n_title <= 10:  # a title within budget survives whole
            assert title == tok.decode(tok.encode_batch([train.question_title[r]])[0])
        words = train.answer[r].lower().split()
        if words and enc.field_lengths[r, 2] > 0:
            assert tok.decode(tok.encode_batch([words[0]])[0]) in answer
        assert enc.lengths[r] <= 128
        first_sep = ids.index(tok.sep_id)
        second_sep = ids.index(tok.sep_id, first_sep + 1)
        assert segment_ids[r, :second_sep + 1].sum() == 0
        assert segment_ids[r, second_sep + 1:enc.lengths[r]].all()
    assert (enc.lengths == 128).sum() > 10  # real rows are long: many fill the budget


def test_cache_key_changes_with_settings_and_tokenizer(tmp_path, synth_dir, tiny_model_dir, minilm_dir):
    cfg = make_config(tmp_path, synth_dir, tiny_model_dir, encode__max_len=64)
    train = tables.load(cfg, "train")
    def cached():
        encoder = encode.Encoder.for_model(cfg)
        return dataclasses.replace(encoder, uses_segments=True).cached(train, "train")

    enc, p1 = cached()
    again, p2 = cached()
    assert p1 == p2 and np.array_equal(enc.arrays["token_ids"], again.arrays["token_ids"])
    cfg.encode.head_share = 0.8
    assert cached()[1] != p1
    cfg.model.path = str(minilm_dir)
    enc_m, p3 = cached()
    assert p3 != p1
    with pytest.raises(ValueError, match="different tokenizer"):
        encode.check_fingerprint(enc_m, tokenizer.load(tiny_model_dir), "train")


def test_max_len_beyond_model_positions_is_an_error(tmp_path, synth_dir, tiny_model_dir):
    cfg = make_config(tmp_path, synth_dir, tiny_model_dir, encode__max_len=1024)
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        encode.Encoder.for_model(cfg)


@pytest.mark.slow
def test_full_size_train_set_encodes_in_seconds(minilm_dir):
    """Correctness of a 6,079-row encode; its speed is measured in benchmarks/, here only bounded loosely."""
    train, _, _ = synth.generate(n_train=6079, n_test=1, seed=0)
    tok = tokenizer.load(minilm_dir)
    start = time.perf_counter()
    enc = encode.encode_frame(train, tok, _settings(max_len=512, title_weight=30, question_weight=239,
                                                   answer_weight=239), uses_segments=True)
    assert time.perf_counter() - start < 60
    assert enc.arrays["token_ids"].shape == (6079, 512)
    share_long = (enc.field_lengths.sum(1) > 508).mean()
    assert 0.15 < share_long < 0.45  # generated lengths follow the real shape (~28% over 512)


def test_a_title_floor_keeps_the_title_at_any_max_len():
    from pipeline.text.encode import SequenceSpec, allocate, budgets

    question = SequenceSpec("question_", ((0,), (1,)), (30, 239), 64, title_floor=26)
    assert budgets(SequenceSpec("question_", ((0,), (1,)), (30, 239), 64), 61) == [6, 55]  # weights alone
    assert budgets(question, 61) == [26, 35]
    assert allocate([11, 400], budgets(question, 61), 61) == [11, 50]  # the median title whole, the rest to the body
    assert budgets(question, 30)[0] == 15  # never more than half the sequence
    joint = SequenceSpec("", ((0,), (1,), (2,)), (30, 239, 239), 512, title_floor=26)
    assert budgets(joint, 508) == budgets(SequenceSpec("", ((0,), (1,), (2,)), (30, 239, 239), 512), 508)  # 30 > 26
    pair = SequenceSpec("", ((0, 1), (2,)), (269, 239), 128, title_floor=26)
    assert budgets(pair, 125) == budgets(SequenceSpec("", ((0, 1), (2,)), (269, 239), 128), 125)  # no title field
