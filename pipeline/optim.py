"""AdamW with two learning rates (backbone, head) on one warm-up + linear-decay schedule."""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="quest")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from 0 to peak over warmup_steps, then linear to 0 at total_steps."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak, self.warmup_steps, self.total_steps = float(peak), int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = max(self.warmup_steps, 1)
        up = step / warm
        down = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        return self.peak * ops.clip(ops.where(step < warm, up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="quest")
class TwoGroupAdamW(keras.optimizers.AdamW):
    """AdamW whose `head` variables step at learning_rate * head_multiplier and the others (the backbone) at
    learning_rate * backbone_multiplier. A group whose multiplier is 0 is frozen: no step, no weight decay.

    Keras calls update_step once per variable with the current learning rate; the head's variables
    are recognised by their index in the optimizer's variable list, recorded in build().
    """

    def __init__(self, head_multiplier=1.0, backbone_multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        self.head_multiplier, self.backbone_multiplier = float(head_multiplier), float(backbone_multiplier)
        self._head_ids: set[int] = set()
        self._head_index: set[int] = set()

    def set_head_variables(self, variables):
        self._head_ids = {id(v) for v in variables}

    def build(self, var_list):
        super().build(var_list)
        self._head_index = {i for i, v in enumerate(var_list) if id(v) in self._head_ids}

    def _multiplier(self, variable) -> float:
        return self.head_multiplier if self._get_variable_index(variable) in self._head_index else self.backbone_multiplier

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if multiplier != 1.0:
            learning_rate = ops.multiply(learning_rate, multiplier)
        return super().update_step(gradient, variable, learning_rate)

    def _use_weight_decay(self, variable):
        return self._multiplier(variable) != 0.0 and super()._use_weight_decay(variable)

    def get_config(self):
        return {**super().get_config(), "head_multiplier": self.head_multiplier,
                "backbone_multiplier": self.backbone_multiplier}


def make(tcfg, steps_per_epoch: int, head_vars) -> TwoGroupAdamW:
    """The optimizer for one fold: schedule in optimizer steps (micro-batches / grad_accum). The schedule peaks at
    lr_backbone (lr_head when the backbone is frozen with lr_backbone = 0); each group scales it to its own rate."""
    total = max(1, (steps_per_epoch * tcfg.epochs) // tcfg.grad_accum)
    base = tcfg.lr_backbone or tcfg.lr_head
    schedule = WarmupLinearDecay(base, int(round(tcfg.warmup * total)), total)
    opt = TwoGroupAdamW(
        head_multiplier=tcfg.lr_head / base if base else 0.0,
        backbone_multiplier=tcfg.lr_backbone / base if base else 0.0, learning_rate=schedule,
        weight_decay=tcfg.weight_decay, global_clipnorm=tcfg.clipnorm or None,
        gradient_accumulation_steps=tcfg.grad_accum if tcfg.grad_accum > 1 else None)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "layer_norm", "LayerNorm", "layer_logits"])
    opt.set_head_variables(head_vars)
    return opt
