"""The model contract, phase freezing and mixed precision, on the real train step (in-process,
default strategy; the Mirrored test runs in a subprocess because the CPU split must happen
before any TF op)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

OVERRIDES = [
    "model.backbone=small_cnn",
    "model.weights=none",
    "model.small_cnn_width=4",
    "model.head_units=[8]",
    "model.head_dropout=[0.1]",
    "data.image_size=32",
    "training.global_batch_size=8",
]


def _batches(count: int, seed: int = 0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count * 8, 32, 32, 1), dtype=np.uint8)
    labels = rng.integers(0, 14, count * 8).astype(np.int32)
    weights = np.ones(count * 8, np.float32)
    return tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels, "weight": weights}
    ).batch(8)


def _phase_step(model, rule: str, precision: str = "off"):
    import tensorflow as tf

    from trainer.loop import make_optimizer, make_train_step
    from trainer.model import set_trainable, trainable_variables

    strategy = tf.distribute.get_strategy()
    set_trainable(model, rule)
    optimizer = make_optimizer("adam", 0.01, precision)
    optimizer.build(trainable_variables(model))
    step = make_train_step(
        strategy, model, optimizer, tf.ones([14]), {"focal_gamma": 2.0, "focal_alpha": 0.25}, 8
    )
    return step


def _values(variables):
    return [np.array(v) for v in variables]


def test_phase_freezing_really_freezes_and_unfreezing_trains():
    import tensorflow as tf

    from trainer.config import load_config
    from trainer.model import backbone_of, build_model

    model = build_model(load_config(None, OVERRIDES))
    backbone = backbone_of(model)
    first_block = backbone.layers[1].weights  # the first conv: frozen by last_n:4
    last_block = backbone.layers[-4].weights  # the last BatchNorm: trainable under last_n:4
    head = model.get_layer("logits").weights
    before = _values(first_block + last_block + head)

    step = _phase_step(model, "last_n:4")
    iterator = iter(_batches(2))
    for _ in range(2):
        step(iterator, tf.constant(0.0))
    after = _values(first_block + last_block + head)
    n = len(first_block)
    for old, new in zip(before[:n], after[:n], strict=True):
        np.testing.assert_array_equal(old, new)  # frozen: unchanged
    assert not np.array_equal(before[n], after[n])  # last BN gamma trained
    assert not np.array_equal(before[-2], after[-2])  # head trained

    step = _phase_step(model, "all")  # a new optimizer and a new tf.function
    step(iter(_batches(1, seed=1)), tf.constant(0.0))
    assert not np.array_equal(after[0], np.array(first_block[0]))  # now it trains


def test_model_takes_uint8_gray_and_outputs_float32_softmax():
    from trainer.config import load_config
    from trainer.model import build_model

    model = build_model(load_config(None, OVERRIDES))
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 1)
    output = model.predict_on_batch(np.zeros((3, 32, 32, 1), np.uint8))
    assert output.dtype == np.float32 and output.shape == (3, 14)
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)


def test_densenet_backbone_loads_a_weights_file_the_user_gives(tmp_path):
    """`model.weights: <file>`: e.g. ImageNet weights copied in for an offline cluster, or a
    backbone pre-trained elsewhere. The file here is written by the test itself."""
    import keras

    from trainer.config import load_config
    from trainer.model import build_backbone, build_model

    source = keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    for variable in source.weights:  # distinctive values, not a fresh initialisation
        variable.assign(np.random.default_rng(7).normal(size=variable.shape).astype("float32"))
    path = tmp_path / "densenet121_notop.weights.h5"
    source.save_weights(path)

    loaded = build_backbone("densenet121", str(path), 32)
    for expected, actual in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(expected), np.asarray(actual))
    model = build_model(load_config(None, [*OVERRIDES, "model.backbone=densenet121",
                                           f"model.weights={path}"]))  # fmt: skip
    assert model.predict_on_batch(np.zeros((2, 32, 32, 1), np.uint8)).shape == (2, 14)


def test_mixed_bfloat16_trains_on_cpu_and_outputs_float32():
    import keras
    import tensorflow as tf

    from trainer.config import load_config
    from trainer.distribute import set_precision
    from trainer.model import build_model

    set_precision("bfloat16")
    try:
        model = build_model(load_config(None, OVERRIDES))
        assert model.get_layer("logits").compute_dtype == "bfloat16"
        kernel = model.get_layer("logits").kernel
        assert kernel.dtype == "float32"  # variables stay float32
        before = np.array(kernel)
        out = _phase_step(model, "all", precision="bfloat16")(iter(_batches(1)), tf.constant(0.0))
        assert np.isfinite(float(out["loss_sum"]))
        assert not np.array_equal(before, np.array(kernel))
        output = model.predict_on_batch(np.zeros((2, 32, 32, 1), np.uint8))
        assert output.dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


_NONFINITE_SCRIPT = r"""
import numpy as np, tensorflow as tf
from trainer.distribute import split_cpu, make_strategy, set_precision
split_cpu(2)
strategy = make_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
set_precision("float16")
from trainer.config import load_config
from trainer.model import build_model, trainable_variables
from trainer.loop import make_optimizer, make_train_step
config = load_config(None, OVERRIDES)
with strategy.scope():
    model = build_model(config)
    optimizer = make_optimizer("adam", 0.01, "float16")
    optimizer.build(trainable_variables(model))
step = make_train_step(strategy, model, optimizer, tf.ones([14]),
                       {"focal_gamma": 2.0, "focal_alpha": 0.25}, 8)

def dataset_fn(context, poison):
    # one pipeline, two replicas: batch 0 goes to replica 0, batch 1 to replica 1
    rng = np.random.default_rng(0)
    weights = np.ones(8, np.float32)
    if poison:
        weights[4:] = np.inf  # only replica 1's batch makes an inf loss
    return tf.data.Dataset.from_tensor_slices({
        "image": rng.integers(0, 256, (8, 32, 32, 1), dtype=np.uint8),
        "label": rng.integers(0, 14, 8).astype(np.int32),
        "weight": weights}).batch(4)

def replicas(variable):
    return [np.array(v) for v in strategy.experimental_local_results(variable.value)]

kernel = model.get_layer("logits").kernel
before = replicas(kernel)
scale_before = float(optimizer.dynamic_scale.numpy())
out = step(iter(strategy.distribute_datasets_from_function(lambda c: dataset_fn(c, True))),
           tf.constant(0.0))
after = replicas(kernel)
assert float(out["nonfinite"]) == 1.0, out  # one replica saw non-finite gradients
for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)  # every replica skipped the update
assert all(np.isfinite(a).all() for a in after)
assert float(optimizer.dynamic_scale.numpy()) == scale_before / 2
out = step(iter(strategy.distribute_datasets_from_function(lambda c: dataset_fn(c, False))),
           tf.constant(0.0))
clean = replicas(kernel)
assert not np.array_equal(clean[0], before[0])
np.testing.assert_array_equal(clean[0], clean[1])
print("SKIPPED-BY-ALL-REPLICAS")
"""


def test_nonfinite_gradient_on_one_replica_is_skipped_by_all_replicas():
    script = f"OVERRIDES = {OVERRIDES!r}\n" + _NONFINITE_SCRIPT
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SKIPPED-BY-ALL-REPLICAS" in result.stdout


@pytest.mark.parametrize("rule", ["all", "head_only", "last_n:3"])
def test_trainable_variable_order_does_not_depend_on_history(rule):
    from trainer.config import load_config
    from trainer.model import build_model, set_trainable, trainable_variables

    fresh = build_model(load_config(None, OVERRIDES))
    set_trainable(fresh, rule)
    flipped = build_model(load_config(None, OVERRIDES))
    set_trainable(flipped, "last_n:2")
    set_trainable(flipped, rule)
    names = [v.path.split("/", 1)[-1] for v in trainable_variables(fresh)]
    assert names == [v.path.split("/", 1)[-1] for v in trainable_variables(flipped)]
