"""Training on several devices or machines with TensorFlow's own ``tf.distribute``.

``mirrored``: the devices of one machine (MirroredStrategy). ``multi_worker``: several
processes or machines (MultiWorkerMirroredStrategy), the cluster read from the
standard ``TF_CONFIG`` variable (:func:`read_tf_config`); one worker is the chief
(:func:`is_chief`): it alone writes the run folder, which must be one folder all
workers see (every worker resumes from its checkpoints).

Why the loop needs more than ``strategy.run``: a distributed step must equal the
single-device step on the same global batch, and three things of these methods are
not plain Keras:

* the loss parts are batch means (cross-entropies, quantization), batch sums (the
  original's center loss) or batch-free (weight decay): each replica scales its part
  so that the replicas' sum is the global-batch value (:func:`replica_loss_scale`),
  and Keras' optimizer sums the replicas' gradients;
* the centers' direct update divides by the count of a label in the whole batch:
  :func:`replica_sum` all-reduces counts and per-class sums
  (``common.layers.center_loss``);
* batch norm normalises with the statistics of the whole batch: every
  BatchNormalization layer computes them over the replicas, in two passes as one
  device does (:func:`synchronize_batch_norm`, :func:`global_batch_moments`).

Data (:func:`replica_index_batches`): every global batch of the single-device order is
cut into one contiguous chunk per replica (sizes differing by at most one). The one
difference from a single device: an epoch's last batch with fewer examples than
replicas is skipped (at most replicas - 1 examples an epoch): a replica with an
empty chunk broke the collective all-reduce of Keras' synchronized batch norm
("Shape mismatch in the collective instance"). Each worker builds only its own
replicas' chunks from its own copy of the split, so no worker holds more than one
split.

``default`` keeps the single-device path: its scale factors are exactly 1.
"""

from __future__ import annotations

from common.errors import ProjectError
import json
import os
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from common.models.replica_ops import replica_sum

DISTRIBUTIONS = ("default", "mirrored", "multi_worker")
LOSS_REDUCTIONS = ("mean", "sum", "none")  # batch mean, batch sum, independent of the batch


class DistributionError(ProjectError, ValueError):
    """A distribution setting that cannot work here (named, with the reason)."""


def configure_cpu_devices(count: int) -> None:
    """Split the CPU into ``count`` logical devices (to run ``mirrored`` without GPUs).

    Must run before TensorFlow initialises its devices, i.e. before any op.
    """
    if count < 1:
        raise DistributionError(f"cpu_devices must be >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as exc:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise DistributionError(
                f"cannot split the CPU into {count} devices: TensorFlow has already "
                f"initialised its devices ({exc})") from None


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``TF_CONFIG`` of a multi-worker run, checked; DistributionError names the fault.

    Expected (README, "Several machines")::

        {"cluster": {"worker": ["host1:port", "host2:port"]},
         "task": {"type": "worker", "index": 0}}

    (optionally a ``"chief": ["host0:port"]`` entry and ``"type": "chief"``).
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    where = "TF_CONFIG"
    if not raw:
        raise DistributionError(
            "--distribution multi_worker reads the cluster from the TF_CONFIG environment "
            "variable, which is not set (README, 'Several machines', has an example)")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise DistributionError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise DistributionError(f"{where} must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise DistributionError(f"{where}: 'cluster' must list the workers, e.g. "
                                '{"worker": ["host1:12345", "host2:12345"]}')
    for kind, addresses in cluster.items():
        if kind not in ("chief", "worker"):
            raise DistributionError(f"{where}: cluster job {kind!r} is not used here (only "
                                    "'chief' and 'worker')")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and ":" in a for a in addresses)):
            raise DistributionError(f"{where}: cluster {kind!r} must be a list of 'host:port', "
                                    f"got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise DistributionError(f"{where}: at most one chief, got {len(cluster['chief'])}")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise DistributionError(f"{where}: 'task' must name this process's job, one of "
                                f"{sorted(cluster)}, e.g. {{\"type\": \"worker\", \"index\": 0}}; "
                                f"got {task!r}")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise DistributionError(f"{where}: task index {index!r} is not one of the "
                                f"{len(cluster[task['type']])} {task['type']} addresses")
    return config


def is_chief(tf_config: Mapping[str, Any] | None) -> bool:
    """Whether this process writes the run folder: the chief, else worker 0 (TF's rule)."""
    if tf_config is None:
        return True
    task = tf_config["task"]
    if task["type"] == "chief":
        return True
    return (task["type"] == "worker" and task.get("index", 0) == 0
            and "chief" not in tf_config["cluster"])


_MULTI_WORKER: list[tf.distribute.Strategy] = []  # TensorFlow allows one per process


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy ``name`` stands for.

    * default: TensorFlow's default (one device, no replicas).
    * mirrored: one replica per local GPU; without GPUs, one per logical CPU device
      (see :func:`configure_cpu_devices`).
    * multi_worker: MultiWorkerMirroredStrategy over ``TF_CONFIG``'s cluster, one
      replica per GPU (or CPU device) of each worker. It must be made before
      TensorFlow runs its first op, and once per process (later calls return it).
    """
    if name not in DISTRIBUTIONS:
        raise DistributionError(f"distribution must be one of {DISTRIBUTIONS}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        read_tf_config()  # a clear message for a missing or malformed cluster
        if not _MULTI_WORKER:
            try:
                _MULTI_WORKER.append(tf.distribute.MultiWorkerMirroredStrategy())
            except (RuntimeError, ValueError) as exc:
                raise DistributionError(
                    "cannot start multi_worker: it must be set up before TensorFlow runs "
                    f"its first op in this process ({str(exc).splitlines()[0]})") from None
        return _MULTI_WORKER[0]
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


def strategy_tf_config(strategy: tf.distribute.Strategy | None) -> dict[str, Any] | None:
    """The cluster of a multi-worker strategy (None for one machine)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return read_tf_config()


def replica_values(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """``value`` as every replica of every worker holds it (one collective gather).

    Used to check that all workers resume from the same epoch.
    """
    @tf.function
    def gather():
        local = strategy.run(lambda: tf.constant([value], tf.int64))
        return strategy.gather(local, axis=0)

    return [int(v) for v in gather().numpy()]


def check_workers_agree(strategy, tf_config: dict[str, Any] | None, start_epoch: int,
                        model_dir: str) -> None:
    """Refuse to train when the workers would resume from different epochs.

    Every worker restores the chief's checkpoints, so they must all see one run
    folder; a worker on another machine with its own empty folder would start
    from scratch and the collectives would never pair up. (No-op on one machine.)
    """
    if tf_config is None:
        return
    epochs = replica_values(strategy, start_epoch)
    if len(set(epochs)) > 1:
        raise DistributionError(
            f"the workers would resume from different epochs ({sorted(set(epochs))}): "
            f"every worker must see the same --model_dir ({model_dir}), one folder shared by "
            "all machines")


def replica_loss_scale(kind: str, local_count: tf.Tensor, global_count: tf.Tensor,
                       num_replicas: int) -> tf.Tensor:
    """Factor that makes the replicas' scaled parts sum to the global-batch part.

    ``mean``: n_local / n_global; ``sum``: 1; ``none`` (the same on every replica,
    e.g. weight decay): 1 / replicas. All exactly 1 on one device.
    """
    if kind == "mean":
        return tf.math.divide_no_nan(local_count, global_count)
    if kind == "sum":
        return tf.constant(1.0)
    if kind == "none":
        return tf.constant(1.0 / num_replicas)
    raise ValueError(f"loss reduction must be one of {LOSS_REDUCTIONS}, got {kind!r}")


def global_batch_moments(inputs: tf.Tensor, axes) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and (biased) variance over the global batch, in two passes as on one device.

    Keras' ``synchronized=True`` computes the variance as E[x^2] - E[x]^2, which loses
    most digits in a channel whose mean is large against its spread (seen here: 4%
    off in a batch-norm gamma gradient at the first step); this all-reduces the sum,
    then the squared deviations from the global mean, like ``tf.nn.moments``.
    Without replicas it is ``tf.nn.moments``.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tf.nn.moments(inputs, axes)
    x = tf.convert_to_tensor(inputs)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), x.dtype)
    total = replica_sum(count)
    mean = tf.math.divide_no_nan(replica_sum(tf.reduce_sum(x, axes)), total)
    squares = tf.reduce_sum(tf.math.squared_difference(x, mean), axes)
    return mean, tf.math.divide_no_nan(replica_sum(squares), total)


def synchronize_batch_norm(model) -> int:
    """Make every BatchNormalization layer of ``model`` use global-batch statistics.

    Returns the number of layers switched. Outside a replica context (inference,
    one device) the layers compute exactly what they did before.
    """
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            def moments(inputs, mask, layer=layer):
                if mask is not None:
                    raise ValueError(f"{layer.name}: masked batch norm cannot be distributed")
                return global_batch_moments(inputs, layer._reduction_axes)
            layer._moments = moments
            count += 1
    return count


def replica_index_batches(order: np.ndarray, batch_size: int, num_replicas: int,
                          first_replica: int, local_replicas: int,
                          max_batches: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """This worker's chunks of every global batch: (flat indices, chunk sizes).

    Global batch b holds ``order[b*batch_size:(b+1)*batch_size]``; it is cut into
    ``num_replicas`` contiguous chunks (``np.array_split``); this worker keeps the
    chunks of replicas ``first_replica .. first_replica + local_replicas - 1``, in
    replica order, batch after batch. A last batch smaller than ``num_replicas`` is
    skipped (see :func:`distributed_steps`).
    """
    flat, sizes = [], []
    steps = distributed_steps(len(order), batch_size, num_replicas)
    for b, start in enumerate(range(0, steps * batch_size, batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        chunks = np.array_split(order[start:start + batch_size], num_replicas)
        for chunk in chunks[first_replica:first_replica + local_replicas]:
            flat.append(chunk)
            sizes.append(len(chunk))
    flat_indices = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    return flat_indices.astype(np.int64), np.asarray(sizes, np.int64)


def distributed_steps(num_examples: int, batch_size: int, num_replicas: int) -> int:
    """Steps of an epoch: every global batch, but a last one smaller than the replicas."""
    full, rest = divmod(num_examples, batch_size)
    return full + (1 if rest >= num_replicas else 0)


def distributed_epoch(strategy: tf.distribute.Strategy, pipeline, epoch: int,
                      max_batches: int | None = None):
    """The distributed dataset of epoch ``epoch``: one PerReplica chunk per replica per step.

    Args:
        strategy: a mirrored strategy.
        pipeline: a :class:`common.data.pipeline.ArrayPipeline` (global batch size, order).
        epoch: 0-based epoch (fixes the order, as on one device).
        max_batches: stop after this many global batches.
    """
    from common.data.pipeline import epoch_order

    order = epoch_order(pipeline.num_examples, epoch, pipeline.shuffle, pipeline.seed)
    num_replicas = strategy.num_replicas_in_sync

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = num_replicas // context.num_input_pipelines
        flat, sizes = replica_index_batches(order, pipeline.batch_size, num_replicas,
                                            context.input_pipeline_id * local, local,
                                            max_batches)
        chunks = tf.RaggedTensor.from_row_lengths(flat, sizes)
        images, labels = pipeline.tensors()

        def gather(index):
            return tf.gather(images, index), tf.gather(labels, index)

        ds = tf.data.Dataset.from_tensor_slices(chunks).map(gather)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)  # the chunks are this worker's already
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=True))
