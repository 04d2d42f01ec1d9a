"""AdamW with per-group learning rates (backbone, head, and optionally each backbone layer) on one schedule.

Schedules (train.schedule), all in optimizer steps with a warm-up of train.warmup (share) or
train.warmup_steps: "linear" (warm-up, then linear to 0), "cosine" (warm-up, then half a cosine to 0),
"one_cycle" (cosine up from peak/25, cosine down to peak/25 again: 6th place's cycle, not PyTorch's OneCycleLR
default that ends at peak/25/1e4), "constant" (warm-up, then the peak: the public baseline). A head-only stage
with train.head_only_lr runs at that rate, constant. Weight decay is decoupled and follows each group's rate.
"""
from __future__ import annotations

import logging
import math

import keras
from keras import ops

SCHEDULES = ("linear", "cosine", "one_cycle", "constant")
ONE_CYCLE_FLOOR = 1.0 / 25  # one_cycle starts and ends at peak * this
log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="quest")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Peak learning rate shaped by `kind` over total_steps, with warmup_steps of warm-up."""

    def __init__(self, peak, warmup_steps, total_steps, kind="linear"):
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)
        self.kind = kind

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warming = step < float(self.warmup_steps)  # never true without a warm-up: step 0 is then at the peak
        up = ops.clip(step / float(max(self.warmup_steps, 1)), 0.0, 1.0)
        down = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        if self.kind == "linear":
            shape = ops.where(warming, up, 1.0 - down)
        elif self.kind == "cosine":
            shape = ops.where(warming, up, 0.5 * (1.0 + ops.cos(math.pi * down)))
        elif self.kind == "constant":
            shape = ops.where(warming, up, 1.0)
        else:  # one_cycle
            low = ONE_CYCLE_FLOOR
            rise = low + (1.0 - low) * 0.5 * (1.0 - ops.cos(math.pi * up))
            fall = low + (1.0 - low) * 0.5 * (1.0 + ops.cos(math.pi * down))
            shape = ops.where(warming, rise, fall)
        return self.peak * shape

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "kind": self.kind}


@keras.saving.register_keras_serializable(package="quest")
class GroupAdamW(keras.optimizers.AdamW):
    """AdamW whose `head` variables step at learning_rate * head_multiplier and the others (the backbone) at
    learning_rate * backbone_multiplier, times a per-variable layer factor (layer-wise decay). A variable whose
    multiplier is 0 is frozen: no step, no weight decay.

    Keras calls update_step once per variable with the current learning rate; variables are recognised by
    their index in the optimizer's variable list, recorded in build().
    """

    def __init__(self, head_multiplier=1.0, backbone_multiplier=1.0, reduced_by_step=False, step_clipnorm=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.head_multiplier, self.backbone_multiplier = float(head_multiplier), float(backbone_multiplier)
        # QuestModel's train step (modeling/accumulate.py) sums the replicas' gradients and clips their true global norm at
        # step_clipnorm itself; this optimizer then does neither (Keras would clip each replica's share).
        self.reduced_by_step, self.step_clipnorm = bool(reduced_by_step), float(step_clipnorm)
        self._head_ids: set[int] = set()
        self._layer_ids: dict[int, float] = {}
        self._by_index: dict[int, float] = {}

    def set_groups(self, head_variables, layer_factors: dict[int, float] | None = None):
        self._head_ids = {id(v) for v in head_variables}
        self._layer_ids = dict(layer_factors or {})

    def build(self, var_list):
        super().build(var_list)
        self._by_index = {i: self.head_multiplier if id(v) in self._head_ids
                          else self.backbone_multiplier * self._layer_ids.get(id(v), 1.0)
                          for i, v in enumerate(var_list)}

    def _multiplier(self, variable) -> float:
        return self._by_index.get(self._get_variable_index(variable), self.backbone_multiplier)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if multiplier != 1.0:
            learning_rate = ops.multiply(learning_rate, multiplier)
        return super().update_step(gradient, variable, learning_rate)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars) if self.reduced_by_step else super()._all_reduce_sum_gradients(grads_and_vars)

    def _apply_weight_decay(self, variables):
        """Decoupled decay at each variable's own rate (the schedule's rate times its group's multiplier), as
        PyTorch's AdamW does per parameter group; Keras would decay every variable at the base rate."""
        if self.weight_decay is None:
            return
        groups: dict[float, list] = {}
        for v in variables:
            groups.setdefault(self._multiplier(v), []).append(v)
        decay = self.weight_decay
        try:
            for multiplier, group in groups.items():  # a Python constant in the traced step, per group
                self.weight_decay = decay * multiplier
                super()._apply_weight_decay(group)
        finally:
            self.weight_decay = decay

    def _get_current_learning_rate(self):
        """The schedule at the optimizer's step. Keras (3.15) reads its schedule at the micro-batch count when it
        accumulates gradients (JAX's train.grad_accum), which ran the schedule k times too fast."""
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    def _use_weight_decay(self, variable):
        return self._multiplier(variable) != 0.0 and super()._use_weight_decay(variable)

    def get_config(self):
        return {**super().get_config(), "head_multiplier": self.head_multiplier,
                "backbone_multiplier": self.backbone_multiplier, "reduced_by_step": self.reduced_by_step,
                "step_clipnorm": self.step_clipnorm}


def warmup_steps(tcfg, total: int) -> int:
    """The stage's warm-up in optimizer steps: train.warmup_steps when set, else the share train.warmup. A
    warm-up as long as the stage or longer would climb for the whole run and never decay: it is scaled to the
    share instead, with a warning naming both numbers."""
    share = int(round(tcfg.warmup * total))
    if not tcfg.warmup_steps:
        return share
    if tcfg.warmup_steps >= total:
        log.warning("train.warmup_steps = %d is not shorter than this stage's %d optimizer steps (the learning rate "
                    "would climb for the whole stage and never decay): warming up for %d steps instead "
                    "(train.warmup = %g of the stage)", tcfg.warmup_steps, total, share, tcfg.warmup)
        return share
    return tcfg.warmup_steps


def make(tcfg, optimizer_steps: int, head_vars, layer_factors=None, head_only: bool = False,
         reduced_by_step: bool = False) -> GroupAdamW:
    """The optimizer for one training stage of `optimizer_steps` steps (each of train.grad_accum micro-batches). The schedule
    peaks at lr_backbone (at lr_head in a head-only stage or when lr_backbone = 0); each group scales it.
    reduced_by_step: for QuestModel's train step, which sums the replicas' gradients and clips them itself
    (TensorFlow; on JAX Keras' own step clips the global norm and the optimizer accumulates train.grad_accum
    micro-batches)."""
    from pipeline.modeling import backend

    jax = backend.is_jax()
    reduced_by_step = reduced_by_step and not jax
    total = max(1, optimizer_steps)
    base = tcfg.lr_head if head_only else (tcfg.lr_backbone or tcfg.lr_head)
    if head_only and tcfg.head_only_lr:
        base, schedule = tcfg.head_only_lr, WarmupSchedule(tcfg.head_only_lr, 0, total, "constant")
    else:
        schedule = WarmupSchedule(base, warmup_steps(tcfg, total), total, tcfg.schedule)
    opt = GroupAdamW(
        head_multiplier=1.0 if head_only else tcfg.lr_head / base if base else 0.0,
        backbone_multiplier=0.0 if head_only or not base else tcfg.lr_backbone / base, learning_rate=schedule,
        weight_decay=tcfg.weight_decay, global_clipnorm=None if reduced_by_step else tcfg.clipnorm or None,
        reduced_by_step=reduced_by_step, step_clipnorm=tcfg.clipnorm if reduced_by_step else 0.0,
        use_ema=tcfg.ema > 0, ema_momentum=tcfg.ema or 0.99,  # grad_accum: micro-batches per step (accumulate.py)
        gradient_accumulation_steps=tcfg.grad_accum if jax and tcfg.grad_accum > 1 else None)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "layer_norm", "LayerNorm", "layer_logits"])
    opt.set_groups(head_vars, layer_factors)
    return opt


def compile_built(model, optimizer, loss, xla: bool = False) -> None:
    """compile, then create the optimizer's variables (moments, EMA, loss scale) at once: created inside the
    first traced train step instead, they make TensorFlow trace that step a second time, which on a CPU took
    as long as the first (~5 s per fold for a 2-layer model, far more for bert-base)."""
    from pipeline.modeling import backend

    model.compile(optimizer=optimizer, loss=loss, jit_compile=xla or backend.is_jax())  # JAX: always compiled
    model.optimizer.build(model.trainable_variables)  # the list the train step applies its gradients to


class ema_weights:
    """Context manager: the model's trainable variables hold the optimizer's moving averages inside the block
    (evaluate or snapshot the EMA model), the raw weights again after it. A no-op without EMA."""

    def __init__(self, optimizer):
        self.opt = optimizer
        self.active = bool(getattr(optimizer, "use_ema", False)) and bool(
            getattr(optimizer, "_model_variables_moving_average", None))
        self.saved = []

    def __enter__(self):
        if self.active:
            variables = self.opt._trainable_variables
            self.saved = [ops.copy(v.value) for v in variables]
            for v, average in zip(variables, self.opt._model_variables_moving_average):
                v.assign(average)
        return self

    def __exit__(self, *exc):
        if self.active:
            for v, value in zip(self.opt._trainable_variables, self.saved):
                v.assign(value)
        return False


def current_rate(optimizer) -> float:
    """The optimizer's learning rate now (its schedule at its step), on any backend."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
