"""Backbone loading (offline) and the multi-output regression head, in the keras-hub style.

The model is functional, with inputs named token_ids, segment_ids and padding_mask (one set per
sequence; dual models prefix them with question_ / answer_); families without segment embeddings
take no segment_ids.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np

from pipeline.core.columns import CATEGORIES, QUESTION_TARGETS, TARGETS
from pipeline.core.errors import UsageError
from pipeline.modeling import cpu_ops, device, targets
from pipeline.modeling.layers import MaskedMeanPooling, OneHot, TargetHead, WeightedLayerSum
from pipeline.text import modeldir
from pipeline.text.batching import INPUT_NAMES
from pipeline.text.encode import SEQUENCE_PREFIXES


def load_backbone(path: str | Path, random_init: bool = False, dropout: float = -1.0, xla: bool = False) -> keras.Model:
    """A keras-hub backbone from a HF directory or keras-hub preset, with weights unless random_init; dropout >= 0
    replaces the backbone's own rate (keras-hub's BERT family: 0.1, whatever a Hugging Face config says). On
    TensorFlow on a CPU it takes cheaper attention, dropout masks and GELU (cpu_ops.py), as a rebuilt model does;
    xla (a model trained under XLA) keeps Keras' attention and dropout: XLA cannot compile the byte masks' draw
    inside the train step's accumulation loop (its shape is not a compile-time constant there)."""
    import keras_hub

    info = modeldir.inspect(path)
    if not random_init and not info.has_weights:
        raise modeldir.ModelDirError(
            f"{info.path}: no weights ({'model.weights.h5' if info.layout == 'keras_hub' else 'model.safetensors'}); "
            "set model.random_init=true to train this architecture from scratch")
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(info.path), load_weights=not random_init,
                                                         **({"dropout": float(dropout)} if dropout >= 0 else {}))
    except (ValueError, KeyError) as err:
        raise modeldir.ModelDirError(f"{info.path}: keras-hub cannot build a backbone from it ({err})") from None
    return with_cpu_ops(backbone, byte_masks=not xla)


def with_cpu_ops(backbone: keras.Model, byte_masks: bool = True) -> keras.Model:
    """The backbone, with cheaper attention and dropout masks (unless byte_masks is off) and GELU where TensorFlow
    runs on a CPU (cpu_ops.py)."""
    if device.tensorflow_on_cpu():
        cpu_ops.use_cpu_ops(backbone, dropout=byte_masks, attention=byte_masks)
    return backbone


def _without_dtype(description: dict) -> dict:
    """The training-time dtype policy (e.g. mixed_bfloat16) is not part of the architecture: without it
    a rebuilt backbone follows the global policy of the machine that predicts (fp16 on a P100/T4)."""
    return {**description, "config": {k: v for k, v in description["config"].items() if k != "dtype"}}


def hidden_state_layers(backbone: keras.Model) -> list:
    layers = [l for l in backbone.layers if re.search(r"(transformer|encoder)_layer_\d+$", l.name)]
    if not layers:
        raise UsageError(f"{type(backbone).__name__} exposes no per-layer outputs; use model.pooling=mean or cls")
    return sorted(layers, key=lambda l: int(l.name.rsplit("_", 1)[1]))


def freeze_pooler(backbones):
    for b in backbones:
        for layer in b.layers:
            if layer.name == "pooled_dense":  # BERT's pooler: unused by every pooling here, so frozen
                layer.trainable = False


def embedding_output(first_layer):
    """The embeddings' output: what the first transformer layer reads (its first input)."""
    x = first_layer.input
    return x[0] if isinstance(x, (list, tuple)) else x


ALL_LAYERS_POOLING = ("cls_all_layers", "cls_all_states")


def _pool(backbone, feed: dict, padding_mask, pooling: str, pool_layers: int, layer_dropout: float, prefix: str,
          states_models: dict):
    """One sequence's pooled vector. states_models caches one hidden-state model per backbone (a shared
    tower is called on both sequences with the same weights)."""
    if pooling in ("weighted", *ALL_LAYERS_POOLING):
        if id(backbone) not in states_models:
            layers = hidden_state_layers(backbone)
            outputs = [l.output for l in layers]
            if pooling == "weighted":
                outputs = outputs[-pool_layers:]
            elif pooling == "cls_all_states":  # the embeddings' output too: BERT-base's 13 hidden states
                outputs = [embedding_output(layers[0])] + outputs
            states_models[id(backbone)] = keras.Model(backbone.input, outputs, name=f"hidden_states_{len(states_models)}")
        states = states_models[id(backbone)](feed)
        if pooling in ALL_LAYERS_POOLING:  # softmax-weighted sum of every state's first token (1st place)
            firsts = [h[:, 0, :] for h in states]
            if layer_dropout:  # each state's [CLS] dropped out on its own (1st place: 0.2)
                firsts = [keras.layers.Dropout(layer_dropout, name=f"{prefix}layer_dropout_{i}")(f)
                          for i, f in enumerate(firsts)]
            return WeightedLayerSum("last" if pooling == "cls_all_states" else "equal",
                                    name=f"{prefix}layer_weights")(firsts)
        sequence = WeightedLayerSum(name=f"{prefix}layer_weights")(states)
    else:
        out = backbone(feed)
        sequence = out["sequence_output"] if isinstance(out, dict) else out
    if pooling == "cls":
        return sequence[:, 0, :]
    return MaskedMeanPooling(name=f"{prefix}mean_pool")(sequence, padding_mask)


@keras.saving.register_keras_serializable(package="quest")
class QuestModel(keras.Model):
    """The task model, in keras-hub's Task style: backbone(s) and the QUEST head as one functional model whose
    get_config holds every head setting and the backbones' architecture, so one saved description
    (model_to_json) plus a fold's weights rebuild it with nothing else.

    inputs "joint": one sequence (token_ids, segment_ids, padding_mask). "dual": a question and an answer
    sequence (question_token_ids ..., answer_token_ids ...), encoded by one shared backbone (siamese) or, when
    answer_backbone is given, by two; their pooled vectors are concatenated. split_heads (dual): question
    targets read the question side only, answer targets both. Side features (category one-hot, host
    embedding; unknown values share bucket 0) are concatenated before the head. The outputs are the target
    coding's units: sigmoid of the head's logits, or (output="linear", the frozen-feature ridge run kind) the
    head's linear values themselves; decode() turns them into the 30 target columns in [0, 1]."""

    def __init__(self, backbone: keras.Model, answer_backbone: keras.Model | None = None, inputs: str = "joint",
                 pooling: str = "mean", pool_layers: int = 4, head: str = "linear", head_hidden: int = 256,
                 split_heads: bool = False, dropout: float = 0.1, dropout_samples: int = 1,
                 categories=(), host_vocab=(), host_dim: int = 16, coding: dict | None = None,
                 output: str = "sigmoid", layer_dropout: float = 0.0, head_batched: bool = False, **kwargs):
        kwargs.pop("n_outputs", None)
        towers = [backbone] + ([answer_backbone] if answer_backbone is not None else [])
        freeze_pooler(towers)
        the_coding = targets.TargetCoding.from_dict(coding) if coding else targets.fit("raw", np.zeros((1, len(TARGETS))))
        prefixes = SEQUENCE_PREFIXES[inputs]
        tensors, pooled, states_models = {}, [], {}
        for s, prefix in enumerate(prefixes):
            tower = towers[min(s, len(towers) - 1)]
            # The inputs the backbone reads, plus padding_mask (pooling); RoBERTa-like families have no segment_ids,
            # and Keras 3.13 (Kaggle's image) refuses a functional model with an unconnected input.
            seq = {n: keras.Input(shape=(None,), dtype="int32", name=prefix + n) for n in INPUT_NAMES
                   if n in tower.input or n == "padding_mask"}
            tensors.update({prefix + n: t for n, t in seq.items()})
            pooled.append(_pool(tower, {n: seq[n] for n in tower.input}, seq["padding_mask"], pooling, pool_layers,
                                layer_dropout, prefix, states_models))
        side = []
        if categories:
            tensors["category_ids"] = keras.Input(shape=(1,), dtype="int32", name="category_ids")
            side.append(OneHot(len(categories) + 1, name="category_one_hot")(tensors["category_ids"]))
        if host_vocab:
            tensors["host_ids"] = keras.Input(shape=(1,), dtype="int32", name="host_ids")
            emb = keras.layers.Embedding(len(host_vocab) + 1, host_dim, name="host_embedding")(tensors["host_ids"])
            side.append(keras.layers.Flatten(name="host_vector")(emb))
        join = lambda parts, name: parts[0] if len(parts) == 1 else keras.layers.Concatenate(name=name)(parts)  # noqa: E731
        everything = join(pooled + side, "features")
        n = len(TARGETS)
        if split_heads and len(pooled) > 1:
            groups = [(join(pooled[:1] + side, "question_features"), list(range(len(QUESTION_TARGETS)))),
                      (everything, list(range(len(QUESTION_TARGETS), n)))]
        else:
            groups = [(everything, list(range(n)))]
        units = the_coding.units()
        head_batched = head_batched and head == "per_target"
        logits = [TargetHead([units[c] for c in cols], head_hidden if head == "per_target" else 0, dropout,
                             dropout_samples, head_batched, name="head" if len(groups) == 1 else f"head_{g}")(x)
                  for g, (x, cols) in enumerate(groups)]
        logits = join(logits, "head_logits")
        outputs = keras.layers.Activation(output, dtype="float32", name="targets")(logits)
        super().__init__(inputs=tensors, outputs=outputs, **{"name": "quest_model", **kwargs})
        self.backbone, self.answer_backbone, self.coding = backbone, answer_backbone, the_coding
        self.settings = {"inputs": inputs, "pooling": pooling, "pool_layers": pool_layers, "head": head,
                         "head_hidden": head_hidden, "split_heads": split_heads, "dropout": dropout,
                         "dropout_samples": dropout_samples, "categories": list(categories),
                         "host_vocab": list(host_vocab), "host_dim": host_dim}
        # written only when not the default, so runs described before they existed still resume
        self.settings.update({k: v for k, v, default in (("output", output, "sigmoid"),
                                                         ("layer_dropout", layer_dropout, 0.0),
                                                         ("head_batched", head_batched, False)) if v != default})

    micro_batches = 1  # set by the trainer (train.grad_accum): each training step is this many micro-batches

    def train_step(self, *args):
        """TensorFlow: Keras' step, but over micro_batches, with the gradient clipped on its true norm
        (accumulate.py). JAX (whose step is train_step(state, data)): Keras' own, the optimizer accumulating the
        micro-batches (gradient_accumulation_steps) and clipping their global norm (optim.make)."""
        from pipeline.modeling import backend

        if backend.is_jax():
            return super().train_step(*args)
        from pipeline.modeling import accumulate

        return accumulate.train_step(self, *args, self.micro_batches)

    @property
    def backbones(self) -> list:
        return [b for b in (self.backbone, self.answer_backbone) if b is not None]

    def freeze_backbones(self, frozen: bool):
        """Head-only stage: backbones out of the trainable variables (no gradients, no steps) and run as at
        inference (their dropout off, as the 6th place's head-only stage read eval-mode features); unfrozen,
        both come back. Recompile after (the train step is traced again with the new rates)."""
        for b in self.backbones:
            b.trainable = not frozen
            for layer in b._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.Dropout):
                    layer.training_rate = getattr(layer, "training_rate", layer.rate)
                    layer.rate = 0.0 if frozen else layer.training_rate
        freeze_pooler(self.backbones)

    def decode(self, outputs) -> np.ndarray:
        """Model outputs (the coding's units) -> (N, 30) predictions in [0, 1]."""
        return self.coding.decode(outputs)

    def feed(self, enc, frame):
        """This model's inputs for the encoded rows of `frame`: their sequences plus its side features."""
        return enc.feed().plus(self.side_arrays(frame)).only(self.input)

    def side_arrays(self, frame) -> dict:
        """Side-feature inputs of a data frame (ids into this model's vocabularies; 0 = unseen)."""
        out = {}
        for name, column, vocab in (("category_ids", "category", self.settings["categories"]),
                                    ("host_ids", "host", self.settings["host_vocab"])):
            if vocab:
                if column not in frame.columns:
                    raise UsageError(f"this model reads the side feature {column!r} (model.category / model.host_dim): "
                                     f"the rows to predict need a {column!r} column, as test.csv has")
                index = {v: i + 1 for i, v in enumerate(vocab)}
                out[name] = np.array([[index.get(v, 0)] for v in frame[column]], np.int32).reshape(-1, 1)
        return out

    def get_config(self):
        serialize = lambda b: None if b is None else _without_dtype(keras.saving.serialize_keras_object(b))  # noqa: E731
        return {"name": self.name, "trainable": self.trainable, "backbone": serialize(self.backbone),
                "answer_backbone": serialize(self.answer_backbone), **self.settings, "coding": self.coding.to_dict()}

    @classmethod
    def from_config(cls, config):
        import keras_hub  # noqa: F401  (registers the backbone classes)

        rebuild = lambda d: None if d is None else with_cpu_ops(  # noqa: E731
            keras.saving.deserialize_keras_object(_without_dtype(d)))
        return cls(**{**config, "backbone": rebuild(config["backbone"]),
                      "answer_backbone": rebuild(config.get("answer_backbone"))})


def build(cfg, model_path, coding: targets.TargetCoding, host_vocab=(), like: dict | None = None) -> QuestModel:
    """The configured model on backbone(s) loaded from model_path (two copies for model.towers = separate).
    like: the run's model description when it has one (a resumed run): per-target heads keep its layout, batched
    or (described before batching existed) separate layers, so every fold's weights load into one model."""
    m = cfg.model
    batched = like is None or bool(like["config"].get("head_batched", False))
    dual = cfg.encode.inputs == "dual"
    backbone = load_backbone(model_path, m.random_init, m.backbone_dropout, cfg.train.xla)
    answer_backbone = load_backbone(model_path, m.random_init, m.backbone_dropout, cfg.train.xla) \
        if dual and m.towers == "separate" else None
    return QuestModel(backbone, answer_backbone, cfg.encode.inputs, m.pooling, m.pool_layers, m.head, m.head_hidden,
                      m.split_heads, m.dropout, m.dropout_samples, list(CATEGORIES) if m.category else [],
                      list(host_vocab) if m.host_dim else [], m.host_dim, coding.to_dict(),
                      "linear" if cfg.train.kind == "ridge" else "sigmoid", m.layer_dropout, batched)


def head_features(model: QuestModel) -> keras.Model:
    """The model up to its head's input: the pooled vector(s) plus side features the head reads (one head)."""
    return keras.Model(model.input, model.get_layer("head").input, name="head_features")


def host_vocabulary(frame, min_rows: int = 1) -> list[str]:
    """Hosts with at least min_rows training rows (text metadata only, no labels), most frequent first."""
    counts = frame["host"].value_counts()
    return [str(h) for h, n in counts.items() if n >= min_rows]


def save_weights(model: keras.Model, path: str | Path):
    """The model's weights alone: Keras' save_weights also writes the optimizer's state (AdamW's two moments, EMA
    copies) when the model is compiled, 3-4x the model's size in every fold file and bundle. Prediction and
    bundles need the weights only; a fold never resumes mid-training."""
    from keras.src.saving import saving_lib  # save_weights' own writer, with its skip list (keras 3.13 and up)

    optimizer = getattr(model, "optimizer", None)  # an uncompiled model has none
    saving_lib.save_weights_only(model, str(path), objects_to_skip=[optimizer] if optimizer else None)


def holds_optimizer_state(path: str | Path) -> bool:
    """Whether a weights file holds an optimizer's state (folds saved before save_weights left it out)."""
    import h5py

    with h5py.File(path, "r") as f:
        return "optimizer" in f


def model_to_json(model: QuestModel) -> str:
    """The model's whole description (backbone architecture + head settings), no weights, no dtype policy."""
    return json.dumps({"class_name": "quest>QuestModel", "config": model.get_config()}, indent=1)


def model_from_json(text: str) -> QuestModel:
    description = json.loads(text)
    if description.get("class_name") != "quest>QuestModel":
        raise UsageError(f"not a QUEST model description (class_name {description.get('class_name')!r})")
    return QuestModel.from_config(description["config"])


def head_variables(model: QuestModel) -> list:
    backbone_ids = {id(v) for b in model.backbones for v in b.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in backbone_ids]


def layer_multipliers(model: QuestModel, decay: float) -> dict[int, float]:
    """Layer-wise learning-rate decay: id(variable) -> factor on the backbone rate. The top transformer layer
    gets 1, each lower one `decay` times the one above, the embeddings decay ** n_layers."""
    if decay == 1.0:
        return {}
    out = {}
    for backbone in model.backbones:
        layers = hidden_state_layers(backbone)
        for depth, layer in enumerate(reversed(layers)):
            out.update({id(v): decay ** depth for v in layer.trainable_variables})
        out.update({id(v): decay ** len(layers) for v in backbone.trainable_variables if id(v) not in out})
    return out
