"""QuestModel's training step: gradient accumulation and clipping that hold on any number of replicas.

Keras' own (the optimizer's gradient_accumulation_steps) applies the update inside a conditional, which
MirroredStrategy and TPUStrategy cannot synchronise ("`merge_call` called while defining a new graph"), so
train.grad_accum > 1 failed on two GPUs. Here a training step receives its k micro-batches as one batch,
runs them one after another in a tf.while_loop (one micro-batch's activations alive at a time, which is
the point of accumulating), sums their gradients weighted by each one's share of the rows (so the step
follows the mean loss over the whole batch exactly, a smaller last batch included) and applies them once,
outside any conditional.
Clipping (train.clipnorm): Keras clips each replica's share of the gradient before summing the replicas
(two GPUs clipped a different gradient than one), and measures an embedding's gradient before summing its
repeated tokens (on a test batch 0.25 where the gradient's norm was 0.98). With an optimizer made
reduced_by_step (optim.make), this step densifies the gradients, sums them over the replicas and clips their
true global norm itself, and the optimizer neither sums nor clips again: one device and two replicas then
take the same step. TensorFlow's side: on JAX the model takes Keras' own step (modeling/backend.py).
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras.src.losses import loss as loss_module


def train_step(model: keras.Model, data, micro_batches: int):
    """Keras' TensorFlow train_step, with the batch split into micro_batches (the rows of each in order)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    rows = tf.shape(y)[0]
    size = -(-rows // micro_batches)
    weights = model.trainable_weights
    take = lambda t, lo, hi: None if t is None else tf.nest.map_structure(lambda a: a[lo:hi], t)  # noqa: E731

    def body(i, total, grads):
        lo = i * size
        hi = tf.minimum(rows, lo + size)
        share = tf.cast(hi - lo, tf.float32) / tf.cast(rows, tf.float32)
        with tf.GradientTape() as tape:
            xi, yi = take(x, lo, hi), take(y, lo, hi)
            y_pred = model(xi, training=True)
            loss = model._compute_loss(x=xi, y=yi, y_pred=y_pred, sample_weight=take(sample_weight, lo, hi),
                                       training=True) * share
            scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        step = tape.gradient(scaled, weights)  # IndexedSlices for embeddings: added densely
        return i + 1, total + loss, [g if s is None else g + tf.ensure_shape(tf.cast(tf.convert_to_tensor(s), g.dtype),
                                                                          g.shape) for g, s in zip(grads, step)]

    zeros = [tf.zeros_like(w) for w in weights]
    _, loss, grads = tf.while_loop(lambda i, *_: i * size < rows, body, (tf.constant(0), tf.constant(0.0), zeros),
                                   parallel_iterations=1)
    model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss), sample_weight=rows)
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # under a LossScaleOptimizer
    if getattr(optimizer, "reduced_by_step", False):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if optimizer.step_clipnorm:
            scale = getattr(model.optimizer, "dynamic_scale", None)  # the gradients are still loss-scaled
            limit = optimizer.step_clipnorm * (1.0 if scale is None else tf.cast(scale, tf.float32))
            grads, _ = tf.clip_by_global_norm(grads, limit)
    model.optimizer.apply_gradients(zip(grads, weights))
    return model.get_metrics_result()
