"""Backbone loading (offline) and the multi-output regression head, in the keras-hub style.

The model is functional, with inputs named token_ids, segment_ids and padding_mask; families
without segment embeddings simply leave segment_ids unused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import keras
from keras import ops

from . import modeldir
from .errors import UsageError

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")


def load_backbone(path: str | Path, random_init: bool = False) -> keras.Model:
    """A keras-hub backbone from a HF directory or keras-hub preset, with weights unless random_init."""
    import keras_hub

    info = modeldir.inspect(path)
    if not random_init and not info.has_weights:
        raise modeldir.ModelDirError(
            f"{info.path}: no weights ({'model.weights.h5' if info.layout == 'keras_hub' else 'model.safetensors'}); "
            "set model.random_init=true to train this architecture from scratch")
    try:
        return keras_hub.models.Backbone.from_preset(str(info.path), load_weights=not random_init)
    except (ValueError, KeyError) as err:
        raise modeldir.ModelDirError(f"{info.path}: keras-hub cannot build a backbone from it ({err})") from None


def _without_dtype(description: dict) -> dict:
    """The training-time dtype policy (e.g. mixed_bfloat16) is not part of the architecture: without it
    a rebuilt backbone follows the global policy of the machine that predicts (fp16 on a P100/T4)."""
    return {**description, "config": {k: v for k, v in description["config"].items() if k != "dtype"}}


@keras.saving.register_keras_serializable(package="quest")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over real tokens only."""

    def call(self, sequence, padding_mask):
        mask = ops.cast(ops.expand_dims(padding_mask, -1), sequence.dtype)
        return ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="quest")
class WeightedLayerSum(keras.layers.Layer):
    """Softmax-weighted sum of the last k hidden states (weights learned, start equal)."""

    def build(self, input_shape):
        self.logits = self.add_weight(shape=(len(input_shape),), initializer="zeros", name="layer_logits")

    def call(self, states):
        w = ops.softmax(self.logits)
        return sum(ops.cast(w[i], s.dtype) * s for i, s in enumerate(states))


@keras.saving.register_keras_serializable(package="quest")
class MultiSampleDropoutDense(keras.layers.Layer):
    """Dense(units) on `samples` dropout masks of the same features, logits averaged (samples=1: plain)."""

    def __init__(self, units, rate=0.1, samples=1, **kwargs):
        super().__init__(**kwargs)
        self.units, self.rate, self.samples = units, rate, samples
        self.dropout = keras.layers.Dropout(rate)
        self.dense = keras.layers.Dense(units)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x, training=None):
        if not training or self.samples == 1:
            return self.dense(self.dropout(x, training=training))
        return sum(self.dense(self.dropout(x, training=True)) for _ in range(self.samples)) / self.samples

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rate": self.rate, "samples": self.samples}


def hidden_state_layers(backbone: keras.Model) -> list:
    layers = [l for l in backbone.layers if re.search(r"(transformer|encoder)_layer_\d+$", l.name)]
    if not layers:
        raise UsageError(f"{type(backbone).__name__} exposes no per-layer outputs; use model.pooling=mean or cls")
    return sorted(layers, key=lambda l: int(l.name.rsplit("_", 1)[1]))


@keras.saving.register_keras_serializable(package="quest")
class QuestModel(keras.Model):
    """The task model, in keras-hub's Task style: a backbone and the QUEST head as one functional model whose
    get_config holds every head setting and the backbone's architecture, so one saved description
    (model_to_json) plus a fold's weights rebuild it with nothing else. Model variants plug in here."""

    def __init__(self, backbone: keras.Model, n_outputs: int = 30, pooling: str = "mean", pool_layers: int = 4,
                 dropout: float = 0.1, dropout_samples: int = 1, **kwargs):
        for layer in backbone.layers:
            if layer.name == "pooled_dense":  # BERT's pooler: unused by every pooling here, so frozen
                layer.trainable = False
        # Inputs the backbone reads, plus padding_mask (pooling); RoBERTa-like families have no segment_ids, and
        # Keras 3.13 (Kaggle's image) refuses a functional model with an unconnected input.
        inputs = {n: keras.Input(shape=(None,), dtype="int32", name=n) for n in INPUT_NAMES
                  if n in backbone.input or n == "padding_mask"}
        feed = {n: inputs[n] for n in backbone.input}
        if pooling == "weighted":
            layers = hidden_state_layers(backbone)[-pool_layers:]
            states = keras.Model(backbone.input, [l.output for l in layers], name="hidden_states")(feed)
            sequence = WeightedLayerSum(name="layer_weights")(states)
        else:
            out = backbone(feed)
            sequence = out["sequence_output"] if isinstance(out, dict) else out
        if pooling == "cls":
            pooled = sequence[:, 0, :]
        else:
            pooled = MaskedMeanPooling(name="mean_pool")(sequence, inputs["padding_mask"])
        logits = MultiSampleDropoutDense(n_outputs, dropout, dropout_samples, name="head")(pooled)
        outputs = keras.layers.Activation("sigmoid", dtype="float32", name="targets")(logits)
        super().__init__(inputs=inputs, outputs=outputs, **{"name": "quest_model", **kwargs})
        self.backbone = backbone
        self.n_outputs, self.pooling, self.pool_layers = n_outputs, pooling, pool_layers
        self.dropout, self.dropout_samples = dropout, dropout_samples

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": _without_dtype(keras.saving.serialize_keras_object(self.backbone)),
                "n_outputs": self.n_outputs, "pooling": self.pooling, "pool_layers": self.pool_layers,
                "dropout": self.dropout, "dropout_samples": self.dropout_samples}

    @classmethod
    def from_config(cls, config):
        import keras_hub  # noqa: F401  (registers the backbone classes)

        config = {**config, "backbone": keras.saving.deserialize_keras_object(_without_dtype(config["backbone"]))}
        return cls(**config)


def build(backbone: keras.Model, n_outputs: int, pooling: str = "mean", pool_layers: int = 4,
          dropout: float = 0.1, dropout_samples: int = 1) -> QuestModel:
    return QuestModel(backbone, n_outputs, pooling, pool_layers, dropout, dropout_samples)


def model_to_json(model: QuestModel) -> str:
    """The model's whole description (backbone architecture + head settings), no weights, no dtype policy."""
    return json.dumps({"class_name": "quest>QuestModel", "config": model.get_config()}, indent=1)


def model_from_json(text: str) -> QuestModel:
    description = json.loads(text)
    if description.get("class_name") != "quest>QuestModel":
        raise UsageError(f"not a QUEST model description (class_name {description.get('class_name')!r})")
    return QuestModel.from_config(description["config"])


def model_inputs(model: keras.Model, arrays: dict) -> dict:
    """The arrays among token_ids / segment_ids / padding_mask that this model takes."""
    return {k: v for k, v in arrays.items() if k in model.input}


def head_variables(model: keras.Model, backbone: keras.Model) -> list:
    backbone_ids = {id(v) for v in backbone.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in backbone_ids]


def load_fold(run_dir, k: int) -> QuestModel:
    """A trained fold, rebuilt from the run's one model description with its weights (checked by hash)."""
    from . import layout, runs

    m = model_from_json(layout.Run(run_dir).model.read_text())
    path = runs.verify_weights(run_dir, k)
    try:
        m.load_weights(path)
    except (OSError, ValueError) as err:
        raise runs.RunError(f"{path} cannot be loaded ({err}); delete {path.parent} and train fold {k} again") from None
    return m
