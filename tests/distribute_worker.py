"""One training run for test_distribute.py, in its own process: `python distribute_worker.py SPEC.json`.

SPEC: {"replicas": 1 or 2 (2: the CPU split into two logical devices, train.strategy = mirrored), "sets": [config
overrides], "out": result file}. Trains through the pipeline's own `train` stage and writes the per-epoch
losses, the replicas the strategy used and the run directory to "out".
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(spec_path: str):
    spec = json.loads(Path(spec_path).read_text())
    import tensorflow as tf

    if spec["replicas"] > 1:  # before TensorFlow initialises its devices
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * spec["replicas"])
    import pandas as pd

    from pipeline.cli import stages
    from pipeline.core import config, files

    cfg = config.load(None, spec["sets"])
    stages.folds(cfg)
    run_dir = stages.train(cfg)[0]
    folds = sorted(int(p.name[4:]) for p in run_dir.glob("fold*"))
    Path(spec["out"]).write_text(json.dumps({
        "run_dir": str(run_dir), "loss": {k: pd.read_csv(run_dir / f"fold{k}" / "history.csv")["loss"].tolist()
                                          for k in folds},
        "replicas": {k: files.read_json(run_dir / f"fold{k}" / "metrics.json")["replicas"] for k in folds},
        "logical_cpus": len(tf.config.list_logical_devices("CPU"))}))


if __name__ == "__main__":
    main(sys.argv[1])
