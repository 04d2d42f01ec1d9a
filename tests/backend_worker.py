"""One backend's side of test_backends.py, in its own process (the backend is fixed when Keras is imported):
`KERAS_BACKEND=jax python backend_worker.py SPEC.json`.

SPEC: {"task": "steps" | "train" | "predict", "sets": the config as TOML, "out": result file, ...}
  steps    build the configured model, load its starting weights from "init" (or save them there when absent),
           take "steps" optimizer steps through the pipeline's own optimizer, feed and compile (train.grad_accum
           micro-batches each) and write the loss on a fixed probe batch after each one, and the final weights
  train    the pipeline's folds + train stages; writes the run directory
  predict  fold "fold" of "run_dir" predicts the run's train rows through the pipeline's Predictor
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def steps(spec, cfg) -> dict:
    import keras

    from pipeline.modeling import feeding, model as model_lib
    from pipeline.train import kfold, optim

    inp, encoder = kfold.prepare(cfg)
    tcfg = cfg.train
    keras.utils.set_random_seed(0)
    from pipeline.modeling import targets

    coding = targets.fit("raw", inp.y)
    model = model_lib.build(cfg, encoder.info.path, coding)
    init = Path(spec["init"])
    if init.is_file():
        model.load_weights(init)
    else:
        model_lib.save_weights(model, init)
    model.micro_batches = tcfg.grad_accum
    feed = model.feed(inp.enc_train, inp.train)
    rows = np.arange(len(inp.train))
    optimizer = optim.make(tcfg, spec["steps"], model_lib.head_variables(model), {}, reduced_by_step=True)
    optim.compile_built(model, optimizer, keras.losses.BinaryCrossentropy())
    probe = feed.rows(rows[:32]).batch(np.arange(32), True, tcfg.batching.pad_multiple)
    y_probe = coding.encode(inp.y[:32])
    losses, lrs = [], []

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # one optimizer step per epoch: the weights are synced here
            pred = keras.ops.convert_to_numpy(self.model(probe, training=False)).astype(np.float64)
            p = np.clip(pred, 1e-7, 1 - 1e-7)
            losses.append(float(-np.mean(y_probe * np.log(p) + (1 - y_probe) * np.log(1 - p))))
            lrs.append(optim.current_rate(self.model.optimizer))

    batch = tcfg.batch_size * tcfg.grad_accum
    data = feeding.train_dataset(feed, coding.encode(inp.y), batch, 7, tcfg.batching, 0, None, tcfg.grad_accum)
    model.fit(data, epochs=spec["steps"], steps_per_epoch=feeding.steps_per_epoch(1, tcfg.grad_accum), verbose=0,
              callbacks=[Probe()])
    flat = np.concatenate([np.ravel(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights])
    return {"losses": losses, "learning_rates": lrs, "weights_norm": float(np.linalg.norm(flat)),
            "weights_head": flat[:50].tolist()}


def main(spec_path: str):
    spec = json.loads(Path(spec_path).read_text())
    from pipeline.core import config

    cfg = config.from_toml_text(spec["sets"])
    from pipeline.cli import stages

    stages.folds(cfg)
    if spec["task"] == "steps":
        out = steps(spec, cfg)
    elif spec["task"] == "train":
        out = {"run_dir": str(stages.train(cfg)[0])}
    else:
        from pipeline.data import tables
        from pipeline.run import predict

        predictor = predict.Predictor.of(Path(spec["run_dir"]), precision="none")
        rows = predictor.rows(tables.load(cfg, "train"))
        out = {"ids": rows["qa_id"].tolist(), "preds": predictor.mean(rows, [spec["fold"]]).tolist()}
    import keras

    out["backend"] = keras.config.backend()
    Path(spec["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
