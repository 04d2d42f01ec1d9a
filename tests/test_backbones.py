"""Backbone and tokenizer sources beyond the HF BERT directory: keras-hub presets, other families."""
import json

import numpy as np
import pytest

from pipeline.modeling import model
from pipeline.text import encode, modeldir, tokenizer

HF_CONFIGS = {
    "distilbert": {"model_type": "distilbert", "vocab_size": 300, "dim": 32, "n_layers": 2, "n_heads": 2,
                   "hidden_dim": 64, "max_position_embeddings": 128, "dropout": 0.1},
    "albert": {"model_type": "albert", "vocab_size": 300, "embedding_size": 16, "hidden_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "max_position_embeddings": 128, "type_vocab_size": 2, "num_hidden_groups": 1,
               "inner_group_num": 1, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    "roberta": {"model_type": "roberta", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 130,
                "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "pad_token_id": 1},
}


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_other_hf_families_build_from_config(tmp_path, family):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"], **HF_CONFIGS[family]}))
    info = modeldir.inspect(tmp_path)
    assert info.family == family and info.uses_segments == (family == "albert") and not info.has_weights
    try:
        bb = model.load_backbone(tmp_path, random_init=True)
    except modeldir.ModelDirError as err:
        import keras_hub

        if "no converter" in str(err) and keras_hub.__version__ < "0.32":  # Kaggle's image: keras-hub 0.26
            pytest.skip(f"keras-hub {keras_hub.__version__} cannot convert HF {family} (the bundle ships 0.32)")
        raise
    m = model.QuestModel(bb, pooling="mean")
    x = {"token_ids": np.full((2, 12), 5, "int32"), "segment_ids": np.zeros((2, 12), "int32"),
         "padding_mask": np.ones((2, 12), "int32")}
    assert np.asarray(m(x)).shape == (2, 30)


@pytest.fixture(scope="module")
def keras_hub_preset(tmp_path_factory, tiny_model_dir):
    """A keras-hub preset directory (as Kaggle Models ships them) saved from a tiny BERT with weights."""
    import keras_hub

    bb = model.load_backbone(tiny_model_dir, random_init=True)
    d = tmp_path_factory.mktemp("preset") / "bert_tiny_preset"
    bb.save_to_preset(str(d))
    vocab = (tiny_model_dir / "vocab.txt").read_text().splitlines()
    tok = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    tok.save_to_preset(str(d))
    return d, bb


def test_keras_hub_preset_loads_weights_and_vocabulary(keras_hub_preset, tiny_model_dir):
    d, original = keras_hub_preset
    info = modeldir.inspect(d)
    assert info.layout == "keras_hub" and info.family == "bert" and info.has_weights
    loaded = model.load_backbone(d)
    for a, b in zip(original.weights, loaded.weights):
        assert np.array_equal(a.numpy(), b.numpy())
    tok, hf_tok = tokenizer.load(d), tokenizer.load(tiny_model_dir)
    text = ["what is the answer to this question?"]
    assert tok.encode_batch(text) == hf_tok.encode_batch(text)
    assert (tok.cls_id, tok.sep_id, tok.double_sep) == (hf_tok.cls_id, hf_tok.sep_id, False)


@pytest.mark.parametrize("layout", ["huggingface", "keras_hub"])
def test_roberta_style_bpe_vocabulary_gets_its_own_specials(tmp_path, layout):
    """A RoBERTa vocabulary (byte-level BPE) from either loader: <s> </s> <pad> and the doubled pair separator
    come from the family's tokenizer, not from guesses."""
    import json

    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the question and the answer are here"] * 50, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(tmp_path))  # vocab.json + merges.txt
    if layout == "huggingface":
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    else:
        import keras_hub

        vocab = json.loads((tmp_path / "vocab.json").read_text())
        merges = [m for m in (tmp_path / "merges.txt").read_text().splitlines() if m and not m.startswith("#")]
        for f in ("vocab.json", "merges.txt"):
            (tmp_path / f).unlink()
        keras_hub.models.RobertaTokenizer(vocabulary=vocab, merges=merges).save_to_preset(str(tmp_path))
    tok = tokenizer.load(tmp_path)
    assert tok.double_sep and tok.decode([tok.cls_id]) == "<s>" and tok.decode([tok.sep_id]) == "</s>"
    settings = type("S", (), dict(inputs="joint", mode="triple", max_len=40, title_weight=5, question_weight=15,
                                  answer_weight=15, head_share=0.5, title_floor=0))
    fields = [tok.encode_batch(["the question"]), tok.encode_batch(["and here"]), tok.encode_batch(["the answer"])]
    spec, = encode.sequence_specs(settings)
    row = encode.assemble(fields, tok, spec, 0.5, uses_segments=False)[0]["token_ids"][0].tolist()
    assert row[0] == tok.cls_id and [tok.sep_id, tok.sep_id] == row[row.index(tok.sep_id, row.index(tok.sep_id) + 1):][:2]
    copy = tmp_path / "copy"
    tok.save(copy)  # what a run keeps: reloads as the same tokenizer
    assert tokenizer.load(copy).fingerprint == tok.fingerprint


def test_a_sentencepiece_only_directory_loads(tmp_path):
    """ALBERT / XLNet ship spiece.model alone: AutoTokenizer converts it (the old loader could not)."""
    import json

    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["the question and the answer are here", "what is a good answer"] * 200))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=25,
                                   user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], pad_id=0, unk_id=1,
                                   bos_id=-1, eos_id=-1, pad_piece="<pad>", unk_piece="<unk>")
    (tmp_path / "spiece.vocab").unlink()
    corpus.unlink()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "albert"}))
    tok = tokenizer.load(tmp_path)
    assert (tok.decode([tok.cls_id]), tok.decode([tok.sep_id])) == ("[CLS]", "[SEP]") and not tok.double_sep
    assert tok.encode_batch(["the answer"])[0] and tokenizer.load(tmp_path).fingerprint == tok.fingerprint


def test_gradient_accumulation_is_one_step_over_the_whole_batch(tiny_model_dir):
    """grad_accum: a step of 12 rows in 3 micro-batches (4, 4, 4) moves the weights as one step over 12 rows at
    once, with one optimizer iteration per step; no dropout, so the two runs see the same function. Plain SGD:
    its step is proportional to the gradient, so a mis-scaled sum would show (Adam's would not)."""
    import keras

    x = {"token_ids": np.random.default_rng(1).integers(5, 300, (24, 16)).astype("int32"),
         "segment_ids": np.zeros((24, 16), "int32"), "padding_mask": np.ones((24, 16), "int32")}
    y = np.random.default_rng(0).random((24, 30)).astype("float32")
    after = []
    for micro in (1, 3):
        keras.utils.set_random_seed(5)
        m = model.QuestModel(model.load_backbone(tiny_model_dir, random_init=True, dropout=0.0), dropout=0.0)
        m.micro_batches = micro
        opt = keras.optimizers.SGD(learning_rate=0.05)
        m.compile(optimizer=opt, loss=keras.losses.BinaryCrossentropy())
        loss = m.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0).history["loss"]
        assert int(opt.iterations.numpy()) == 2  # 24 rows, steps of 12: two optimizer steps either way
        after.append((loss, m.get_weights()))
    (loss_one, one), (loss_three, three) = after
    assert np.allclose(loss_one, loss_three, rtol=1e-5)
    assert max(np.abs(a - b).max() for a, b in zip(one, three)) < 1e-6
