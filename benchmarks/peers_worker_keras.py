"""peers.py worker: Keras 3 on TensorFlow or JAX (KERAS_BACKEND, set by peers.py), run with
the peer venv's python (benchmarks/setup_peers.sh makes them).

The model is built from the study file's own layer list (archlab's spec uses Keras's names
and arguments) with keras.layers, compiled as a Keras user would (softmax output, sparse
categorical cross-entropy, accuracy metric, ``jit_compile="auto"``: XLA on JAX, none on
TensorFlow on this CPU; the ``tf-xla`` peer asks for ``jit_compile=True``) and trained with
``model.fit`` on NumPy arrays (shuffled). Timed: one fit epoch of ``steps`` batches, from
on_epoch_begin to on_epoch_end, after a warm-up fit of ``warmup`` batches (which traces and
compiles the train step).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_worker_common import (  # noqa: E402
    Snapshot,
    cpu_window,
    layer_items,
    read_job,
    report,
    synthetic_data,
)


def main() -> None:
    job = read_job()
    threads = job["threads"]
    backend = os.environ["KERAS_BACKEND"]
    if backend == "jax" and threads == 1:  # XLA's CPU pool is sized to the cores otherwise
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                   "=false intra_op_parallelism_threads=1").strip()
    if backend == "tensorflow":
        import tensorflow as tf
        if threads:  # else TensorFlow's default
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        version = tf.__version__
    else:
        import jax
        version = jax.__version__
    import keras

    keras.utils.set_random_seed(job["seed"])
    layers = [keras.Input((28, 28, 1))]
    for kind, args in layer_items(job["layers"]):
        layers.append(getattr(keras.layers, kind)(**args))
    model = keras.Sequential(layers)
    o = job["optimizer"]
    if o["name"] == "adam":
        opt = keras.optimizers.Adam(learning_rate=o.get("learning_rate", 1e-3))
    elif o["name"] == "adadelta":  # Keras 2's defaults, as archlab's adadelta
        opt = keras.optimizers.Adadelta(learning_rate=o.get("learning_rate", 1.0), rho=0.95)
    elif o["name"] == "sgd":
        opt = keras.optimizers.SGD(learning_rate=o.get("learning_rate", 0.01),
                                   momentum=o.get("momentum", 0.0))
    else:
        raise SystemExit(f"keras peer: no optimizer {o['name']}")
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=job.get("jit_compile", "auto"))
    bs, bg = job["batch_size"], job["background_pid"]
    marks: dict[str, Snapshot] = {}

    class Window(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks["start"] = Snapshot.take(bg)

        def on_epoch_end(self, epoch, logs=None):
            marks["end"] = Snapshot.take(bg)

    x, y = synthetic_data(job["warmup"] * bs, job["seed"] + 1, channels_last=True)
    model.fit(x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0)
    x, y = synthetic_data(job["steps"] * bs, job["seed"], channels_last=True)
    model.fit(x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0, callbacks=[Window()])
    report(job, cpu_window(marks["start"], marks["end"]), backend=backend, version=version,
           keras=keras.__version__, jit_compile=bool(model.jit_compile), threads=threads)


if __name__ == "__main__":
    main()
