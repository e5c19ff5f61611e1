"""The model: uint8 gray input -> in-model preprocessing -> backbone -> reference head.

Only built-in Keras layers, so `JOB/model/final.keras` loads with plain
`keras.saving.load_model` in a process that never imported `trainer`.
Input uint8 [batch, S, S, 1]; output float32 [batch, 14] softmax in CLASS_NAMES order.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bonify.vocabulary import NUM_CLASSES
from trainer.config import parse_trainable
from trainer.errors import TrainerError

# keras.applications DenseNets expect 'torch' preprocessing: x/255, then ImageNet mean/std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DENSENETS = {
    "densenet121": keras.applications.DenseNet121,
    "densenet169": keras.applications.DenseNet169,
    "densenet201": keras.applications.DenseNet201,
}


def _small_cnn(image_size: int, width: int, bn_momentum: float) -> keras.Model:
    """A tiny conv net (4 blocks) for CPU tests and the demo; named like a backbone."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for block in range(4):
        filters = width * 2**block
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum)(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, x, name="small_cnn")


def build_backbone(
    name: str, weights: str, image_size: int, small_cnn_width: int = 16, bn_momentum: float = 0.99
):
    """A headless, pooled backbone taking float 3-channel ImageNet-normalised input.

    weights: "imagenet" (DenseNets only), "none", or a weights file loaded into the backbone.
    """
    if name == "small_cnn":
        backbone = _small_cnn(image_size, small_cnn_width, bn_momentum)
    else:
        backbone = _densenet(name, image_size, imagenet=weights == "imagenet")
    if weights not in ("none", "imagenet"):
        _load_weights(backbone, weights)
    return backbone


def _densenet(name: str, image_size: int, imagenet: bool) -> keras.Model:
    try:
        return _DENSENETS[name](
            include_top=False,
            weights="imagenet" if imagenet else None,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except Exception as error:  # noqa: BLE001 - Keras raises a bare Exception on fetch failure
        if not imagenet:
            raise
        # Offline nodes: Keras downloads the ImageNet weights on first use (into
        # $KERAS_HOME/models/, default ~/.keras/models/) and fails with a long traceback.
        raise TrainerError(
            f"model.weights imagenet: cannot get the {name} ImageNet weights "
            f"({str(error).splitlines()[0][:200]}); on an offline machine put the file in "
            "$KERAS_HOME/models/ first, or set model.weights to a local weights file"
        ) from None


def _load_weights(backbone: keras.Model, path: str) -> None:
    if not tf.io.gfile.exists(path):
        raise TrainerError(f"model.weights {path}: no such file")
    try:
        backbone.load_weights(path)
    except Exception as error:  # noqa: BLE001 - any failure here is a bad user file
        raise TrainerError(f"model.weights {path}: cannot load ({type(error).__name__})") from None


def build_model(config: dict) -> keras.Model:
    """The full model of the config (call inside `strategy.scope()`)."""
    model_config = config["model"]
    image_size = config["data"]["image_size"]
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
    x = keras.layers.Normalization(
        mean=list(IMAGENET_MEAN),
        variance=[s * s for s in IMAGENET_STD],
        name="imagenet_normalize",
    )(x)
    backbone = build_backbone(
        model_config["backbone"],
        model_config["weights"],
        image_size,
        model_config["small_cnn_width"],
        model_config["bn_momentum"],
    )
    x = backbone(x)
    for i, (units, rate) in enumerate(
        zip(model_config["head_units"], model_config["head_dropout"], strict=True)
    ):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{i}")(x)
        x = keras.layers.BatchNormalization(
            momentum=model_config["bn_momentum"], name=f"head_bn_{i}"
        )(x)
        x = keras.layers.Dropout(rate, name=f"head_dropout_{i}")(x)
    x = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="bonify")


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def preprocessing_of(model: keras.Model) -> keras.Model:
    """The model's own preprocessing as a model: uint8 [batch, S, S, 1] in, the float32
    [batch, S, S, 3] tensor the backbone receives out (x/255, gray copied to RGB, ImageNet
    mean/std per channel). Shares the layers of `model`; for tests and inspection."""
    backbone_input = backbone_of(model)._inbound_nodes[0].input_tensors[0]
    return keras.Model(model.inputs, backbone_input, name="preprocessing")


def set_trainable(model: keras.Model, rule: str) -> None:
    """Apply a phase's trainable rule (all | head_only | last_n:N); the head always trains.

    Build a new optimizer and a new tf.function afterwards: flipping `trainable` under an
    already traced step does nothing (the traced graph keeps the old variable list).
    """
    kind, count = parse_trainable(rule)
    backbone = backbone_of(model)
    # Set every layer explicitly: in Keras 3.15 `backbone.trainable = True` does not undo
    # an earlier `layer.trainable = False` on its sublayers.
    for layer in model.layers:
        layer.trainable = True
    frozen = {"all": 0, "head_only": len(backbone.layers), "last_n": len(backbone.layers) - count}
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= frozen[kind]


def trainable_variables(model: keras.Model) -> list:
    """The model's trainable variables in a canonical order (sorted by path).

    Optimizer checkpoints restore by position, and Keras' own order depends on the history
    of `trainable` flips, so the order must not: a resumed process builds the same list.
    """
    return sorted(model.trainable_variables, key=lambda variable: variable.path)
