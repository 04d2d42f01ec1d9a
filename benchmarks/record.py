"""What every benchmark result states, and how it is kept.

Each result names the date, the device it ran on and the command that reproduces it (`stamp`). It is written as a
JSON record beside a readable Markdown table (`write`), each file whole or not at all: a temp file renamed into
place, so a benchmark killed mid-write never leaves a half-written table where the last good one was.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def gpu_name() -> str:
    """The first GPU's name as the driver gives it ("NVIDIA H100 80GB HBM3"), or "" without a GPU; under
    KERAS_BACKEND=jax as JAX lists it (TensorFlow may be absent there)."""
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        return gpus[0].device_kind if gpus else ""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else ""


def device(tensorflow: bool = True) -> str:
    """The line each result states: "2 x <GPU name>" / "<GPU name>", or "CPU (x86_64, 2 cores)", also for a
    benchmark that computes without TensorFlow (`tensorflow=False`: numpy and scikit-learn run on the CPU)."""
    name = gpu_name() if tensorflow else ""
    if name:
        if os.environ.get("KERAS_BACKEND") == "jax":
            import jax

            n = len([d for d in jax.devices() if d.platform == "gpu"])
        else:
            import tensorflow as tf

            n = len(tf.config.list_physical_devices("GPU"))
        return name if n == 1 else f"{n} x {name}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def stamp(script: str, argv: list[str] | None = None, tensorflow: bool = True) -> dict:
    """Date, device and the command that reproduces the result (`script` is the benchmark's __file__)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return {"date": time.strftime("%Y-%m-%d"), "device": device(tensorflow),
            "command": " ".join(["python", f"benchmarks/{Path(script).name}", *args])}


def write(result: dict, text: str, path: Path, md: Path | None = None) -> list[Path]:
    """`result` as JSON at `path` and `text` at `md` (default: beside it, .md), each written whole or not at all."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pipeline.core import files

    path = Path(path)
    return [files.write_json(path, result), files.write_text(md or path.with_suffix(".md"), text)]
