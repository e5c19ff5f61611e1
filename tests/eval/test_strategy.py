"""The multi-replica predict function (MirroredStrategy, >1 GPU) keeps row order and values.

Run in a subprocess: the CPU must be split into two logical devices before TensorFlow runs
any op, which the pytest process has long done.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = """
import numpy as np, tensorflow as tf, keras
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from eval.predict import make_predict_function
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(14, activation="softmax")(x))
predict = make_predict_function(model, strategy)
rng = np.random.default_rng(0)
for size in (7, 16, 1):  # odd, even, fewer rows than replicas
    images = rng.integers(0, 255, (size, 8, 8, 1)).astype("uint8")
    got = np.asarray(predict(tf.constant(images)))
    np.testing.assert_allclose(got, model.predict(images, verbose=0), atol=1e-6)
print("OK")
"""


def test_mirrored_predict_matches_single_device_in_order():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
