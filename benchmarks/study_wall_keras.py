"""study_wall.py's Keras side: the study a Keras 3 + TensorFlow user would script by hand.

Run with the tf venv's python (benchmarks/setup_peers.sh); KERAS_BACKEND=tensorflow. Reads MNIST
from the IDX files in DATA_DIR (as archlab reads them), scales to [0, 1], builds the model from
LAYERS_JSON (the zoo study's own Keras layer list), compiles it with the study's optimizer
(Adadelta, Keras 2's learning rate 1.0 and rho 0.95, as the zoo's keras-mnist-cnn), trains it
with ``fit(..., validation_data=(x_test, y_test))`` for EPOCHS epochs (the notebooks' way: the
test set as validation data, evaluated every epoch), then ``evaluate`` on the test set, and
prints a one-row table. Everything is timed by the caller, from process start to exit.

    python study_wall_keras.py DATA_DIR EPOCHS BATCH LAYERS_JSON
"""

from __future__ import annotations

import gzip
import json
import sys
import time

import numpy as np


def idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    data_dir, epochs, batch, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        json.loads(sys.argv[4])
    import keras

    x_train = idx(f"{data_dir}/train-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
    y_train = idx(f"{data_dir}/train-labels-idx1-ubyte.gz").astype("int64")
    x_test = idx(f"{data_dir}/t10k-images-idx3-ubyte.gz")[..., None].astype("float32") / 255
    y_test = idx(f"{data_dir}/t10k-labels-idx1-ubyte.gz").astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1))] + [
        getattr(keras.layers, kind)(**args) for kind, args in
        ((next(iter(layer)), next(iter(layer.values())) or {}) if isinstance(layer, dict)
         else (layer, {}) for layer in layers)])
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch, epochs=epochs, verbose=2,
              validation_data=(x_test, y_test))
    train_s = time.perf_counter() - started
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"{'model':<8}{'test acc':>10}{'test loss':>11}{'params':>12}{'fit (s)':>9}")
    print(f"{'cnn':<8}{acc:>10.2%}{loss:>11.4f}{model.count_params():>12,}{train_s:>9.1f}",
          flush=True)


if __name__ == "__main__":
    main()
