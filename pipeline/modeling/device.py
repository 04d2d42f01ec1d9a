"""Pick the tf.distribute strategy (on JAX: the devices, backend.py) and the precision policy for this machine."""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from pipeline.core.errors import UsageError
from pipeline.modeling import backend

log = logging.getLogger(__name__)
_TPU_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


STRATEGIES = ("auto", "default", "mirrored", "tpu")


def strategy(setting: str = "auto", quiet: bool = False):
    """The tf.distribute strategy for train.strategy. auto: TPUStrategy on a TPU (Kaggle/Colab TPU VM),
    MirroredStrategy over the GPUs when there are several (Kaggle's T4 x2), else the default strategy (one GPU
    such as the P100, or the CPU). default / mirrored / tpu force one; mirrored on a machine without GPUs
    mirrors over the logical CPU devices (tests split the CPU in two). quiet: say nothing (prediction)."""
    say = (lambda *a: None) if quiet else log.info
    backend.check_supported()
    if backend.is_jax():
        return backend.strategy(setting, say)
    import tensorflow as tf

    tpu_hinted = any(os.environ.get(v) for v in _TPU_HINTS) or Path("/dev/accel0").exists()
    if setting == "tpu" or (setting == "auto" and tpu_hinted):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu="local" if Path("/dev/accel0").exists() else None)  # a TPU VM's chips are local
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            say("TPU found: TPUStrategy with %d cores", resolver.num_accelerators().get("TPU", 0))
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            if setting == "tpu":
                raise UsageError(f"train.strategy = 'tpu' but no TPU is usable here ({err})") from None
            log.warning("TPU hinted but not usable (%s); falling back", err)
    gpus = tf.config.list_logical_devices("GPU")
    if setting == "mirrored" or (setting == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        say("MirroredStrategy over %d device(s): %s (train.batch_size rows per device)", len(devices), devices)
        return tf.distribute.MirroredStrategy(devices)
    if gpus:
        say("GPU found: %s (one device; train.strategy = mirrored would use all %d)", gpus[0].name, len(gpus))
    else:
        say("No accelerator found: training on CPU (fine for configs/demo.toml; real backbones want a GPU kernel, "
            "see benchmarks/README.md for rates measured on a CPU)")
    return tf.distribute.get_strategy()


def accelerator_kind(strat) -> str:
    if backend.is_jax():
        return backend.accelerator_kind()
    import tensorflow as tf

    if isinstance(strat, tf.distribute.TPUStrategy):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


# CPU flags (Linux /proc/cpuinfo) of bfloat16 matrix units, best first: AMX tiles (Sapphire Rapids and later),
# AVX-512 BF16 dot products (Cooper Lake, Zen 4 and later). oneDNN runs TensorFlow's bfloat16 matmuls on them.
CPU_BF16_UNITS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); none where they cannot be read (other systems than Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((l for l in text.splitlines() if l.startswith("flags")), "").partition(":")[2].split())


def cpu_bf16_unit(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's bfloat16 matrix unit in words ("AMX", "AVX-512 BF16"), or "" where it has none (or the flags cannot
    be read)."""
    flags = cpu_flags(cpuinfo)
    return next((name for flag, name in CPU_BF16_UNITS.items() if flag in flags), "")


def cpu_auto_precision() -> str:
    """train.mixed_precision = auto on a CPU: bfloat16 where TensorFlow runs its matrix multiplies on bfloat16 units
    (measured faster at the same out-of-fold score: benchmarks/README.md, "The CPU at its limit"), else none.
    JAX keeps float32 on a CPU (XLA:CPU; not measured in bfloat16)."""
    return "bfloat16" if cpu_bf16_unit() and not backend.is_jax() else "none"


@functools.cache
def _say_cpu_precision(setting: str) -> None:
    unit = cpu_bf16_unit()
    if setting == "bfloat16":
        log.info("CPU with %s: bfloat16 mixed precision (train.mixed_precision = auto; none keeps float32)", unit)
    elif unit:
        log.info("CPU with %s, but bfloat16 is used on TensorFlow only: float32 on %s", unit, backend.name())


def tensorflow_on_cpu() -> bool:
    """TensorFlow with no GPU or TPU device: where cpu_ops.py's cheaper attention, dropout and GELU were measured
    faster."""
    if backend.is_jax():
        return False
    import tensorflow as tf

    return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def describe() -> str:
    """The device and the precision prediction will use, in words (for the Kaggle notebook)."""
    if backend.is_jax():
        return backend.describe()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        if cpu_auto_precision() == "bfloat16":
            return f"CPU ({os.cpu_count()} cores, {cpu_bf16_unit()}), bfloat16 mixed precision"
        return f"CPU ({os.cpu_count()} cores), float32"
    details = tf.config.experimental.get_device_details(gpus[0])
    cc = details.get("compute_capability", (0, 0))
    return (f"{len(gpus)} x {details.get('device_name', 'GPU')} (compute capability {cc[0]}.{cc[1]}), "
            f"{'bfloat16' if cc[0] >= 8 else 'float16'} mixed precision")


def set_precision(setting: str, kind: str) -> str:
    """Apply the Keras dtype policy. auto: bf16 on TPU and Ampere+ GPUs, fp16 on older GPUs; on a CPU bf16 where it
    has bfloat16 matrix units (cpu_auto_precision), else fp32."""
    import keras

    if setting == "auto":
        if kind == "tpu":
            setting = "bfloat16"
        elif kind == "gpu":
            setting = "bfloat16" if _compute_capability() >= 8 else "float16"
        else:
            setting = cpu_auto_precision()
            _say_cpu_precision(setting)
    policy = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[setting]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _compute_capability() -> int:
    """The first GPU's major compute capability (8 = Ampere)."""
    if backend.is_jax():
        return backend.compute_capability()
    import tensorflow as tf

    details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
    return details.get("compute_capability", (0, 0))[0]
