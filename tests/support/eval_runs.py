"""Evaluator test helpers: small models in the trainer's contract, their cards, and
`bonify-eval` in a fresh interpreter that reports whether TensorFlow got imported."""

from __future__ import annotations

import json
import subprocess
import sys

from bonify.model_card import CARD_FILE
from bonify.vocabulary import CLASS_NAMES, SCHEMA_VERSION
from tests.support.trainer_runs import REPO_ROOT, stage_env


def write_model_card(model_dir, image_size: int, resize: str = "pad") -> None:
    """The smallest valid model card (the input spec only) in `model_dir`."""
    card = {"input_spec": {"image_size": image_size, "resize": resize,
                           "class_names": list(CLASS_NAMES), "schema_version": SCHEMA_VERSION}}  # fmt: skip
    (model_dir / CARD_FILE).write_text(json.dumps(card))


def save_dense_model(folder, image_size: int, seed: int):
    """A .keras model in the trainer's contract (uint8 [B, S, S, 1] -> float32 softmax [B, 14])
    with its model card: untrained, a dense layer over the pixels, so mirroring an image
    changes its probabilities clearly (a pooled conv net is nearly mirror-invariant)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(14, kernel_initializer=keras.initializers.RandomNormal(stddev=0.05))(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(x))
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "final.keras")
    write_model_card(folder, image_size)
    return folder / "final.keras"


def run_eval_in_fresh_interpreter(argv) -> subprocess.CompletedProcess:
    """bonify-eval in a fresh interpreter; stdout's last line says whether TensorFlow got
    imported."""
    code = (
        "import sys\nfrom eval.__main__ import main\n"
        f"code = main({list(map(str, argv))!r})\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(code)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=stage_env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def one_error_line_before_tensorflow(result: subprocess.CompletedProcess) -> str:
    """The single `bonify-eval: error:` line of a run that exited 2 without importing
    TensorFlow."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-eval: error:"), result.stderr
    assert result.stdout.strip() == "tensorflow imported: False"
    return lines[0]
