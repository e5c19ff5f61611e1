"""`bonify-app`: a Streamlit page where a person uploads the radiographs of one study and sees,
per image, the original beside its Grad-CAM overlay, the body region, normal/abnormal, the
confidence and the top 3 classes, and for the study P(abnormal) and the verdict at the model
card's threshold. A sidebar shows the model card.

Two halves: `console_main` checks the command line (no TensorFlow, no Streamlit yet) and then
becomes `python -m serve.app_server run serve/app_page.py` (same PID, so stopping it stops the
server), passing the checked models through the BONIFY_APP_CONFIG environment variable; that
process loads the model BEFORE Streamlit opens its port, so Streamlit's /_stcore/health (the
Kubernetes readiness probe) answers only once the model is loaded, and the first visitor
does not wait for it. `render_page` is what the page script draws, on `serve.core.Predictor`
(the same image path, card and Grad-CAM as bonify-predict; nothing is re-implemented here).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Sequence

import numpy as np

from bonify.cli import BonifyError, OneLineArgumentParser, run_command
from bonify.study_metrics import region_given_abnormal
from bonify.vocabulary import CLASS_NAMES, REGIONS
from serve.core import add_model_argument

PROG = "bonify-app"

#: How the console script hands the checked model paths to the page script.
CONFIG_VARIABLE = "BONIFY_APP_CONFIG"

PAGE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app_page.py")

NOT_KNOWN = "not known (the model says)"

DISCLAIMER = "Research use; not a medical device."

DESCRIPTION = """\
Serve a web page where you upload the radiographs of one study (PNG, JPEG or DICOM) and see,
per image, the original beside its Grad-CAM overlay, the body region, normal/abnormal, the
confidence and the top 3 classes; for the study, P(abnormal) and the verdict at the model
card's threshold. The model is loaded once per server process.
Research use only; not a medical device."""

EXAMPLES = """\
# the demo's model, on this machine only (open http://127.0.0.1:8501)
bonify-app --model demo_output/job
# a trained model file, reachable from other machines on port 8080
bonify-app --model job/model/final.keras --host 0.0.0.0 --port 8080"""


class AppError(BonifyError):
    """A bad bonify-app command line (model path, port)."""


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=PROG, description=DESCRIPTION, examples=EXAMPLES)
    add_model_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on")
    parser.add_argument(
        "--image_size", type=int, help="only for a model without a card: its input size"
    )
    parser.add_argument("--resize", help="only for a model without a card: pad|stretch")
    return parser


def check_arguments(argv: Sequence[str] | None) -> dict:
    """The page's configuration from a checked command line (every user error here, before
    TensorFlow or Streamlit is imported): models, image_size, resize, host, port."""
    from serve.core import check_model_paths

    arguments = build_parser().parse_args(argv)
    if not 0 < arguments.port < 65536:
        raise AppError(f"--port must be between 1 and 65535, got {arguments.port}")
    models, _, _ = check_model_paths(arguments.model, arguments.image_size, arguments.resize)
    return {
        "models": [os.path.abspath(file) for file in models],
        "image_size": arguments.image_size,
        "resize": arguments.resize,
        "host": arguments.host,
        "port": arguments.port,
    }


def streamlit_command(config: dict) -> list[str]:
    """`python -m serve.app_server run serve/app_page.py` (Streamlit's own `streamlit run`
    after the model is loaded) with a server that opens no browser, sends no usage
    statistics and does not watch files."""
    return [
        sys.executable, "-m", "serve.app_server", "run", PAGE_SCRIPT,
        "--server.address", config["host"],
        "--server.port", str(config["port"]),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--global.developmentMode", "false",
    ]  # fmt: skip


def _run(argv: Sequence[str] | None) -> int:
    config = check_arguments(argv)
    environment = dict(os.environ, **{CONFIG_VARIABLE: json.dumps(config)})
    print(f"{PROG}: serving {config['models'][0]} on http://{config['host']}:{config['port']}")
    sys.stdout.flush()
    # exec, not a child process: the PID a caller holds is the server's, so stopping it works.
    command = streamlit_command(config)
    os.execve(command[0], command, environment)
    return 0  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """Run bonify-app with `argv` (default: sys.argv[1:]); returns the exit code on errors."""
    return run_command(PROG, _run, argv)


def console_main() -> None:
    """Entry point of the `bonify-app` console script."""
    sys.exit(main())


# ---- page logic (plain functions, no Streamlit) ------------------------------------------


def region_given_probability(probabilities: dict[str, float], region: str) -> float:
    """P(abnormal | the image shows `region`): P(region_Abnormal) / (P(region_Normal) +
    P(region_Abnormal)); 0.5 when the model puts no mass on that region at all."""
    probs = probability_vector(probabilities)[np.newaxis]
    return float(region_given_abnormal(probs, REGIONS.index(region))[0])


def probability_vector(probabilities: dict[str, float]) -> np.ndarray:
    """float64 [14] in CLASS_NAMES order, from probabilities by class name."""
    return np.array([probabilities[name] for name in CLASS_NAMES], dtype=np.float64)


def card_lines(card_raw: dict | None, threshold: float) -> list[str]:
    """Markdown lines for the sidebar: model, training data counts, validation metrics,
    threshold (whatever of these the card has)."""
    if not card_raw:
        return [f"No model card; threshold {threshold:g} (default)."]
    spec = card_raw.get("input_spec", {})
    model = card_raw.get("config", {}).get("values", {}).get("model", {})
    lines = [
        f"**Model:** {model.get('backbone', '?')} ({card_raw.get('model_file', '?')}), "
        f"{spec.get('image_size', '?')} px {spec.get('resize', '')}",
    ]
    splits = card_raw.get("training_data", {}).get("splits", {})
    if splits:
        counts = ", ".join(
            f"{name} {split.get('images', '?')} images / {split.get('studies', '?')} studies"
            for name, split in splits.items()
        )
        lines.append(f"**Training data:** {counts}")
    for phase in card_raw.get("validation", []) or []:
        accuracy = phase.get("best_val_accuracy")
        if accuracy is not None:
            lines.append(
                f"**Validation** ({phase.get('name', phase.get('phase'))}): "
                f"best accuracy {accuracy:.3f} at epoch {phase.get('best_epoch')}"
            )
    lines.append(f"**Threshold:** {threshold:g} ({card_raw.get('threshold_source', 'card')})")
    return lines


# ---- the page (runs inside `streamlit run`) ---------------------------------------------


def page_config() -> dict:
    raw = os.environ.get(CONFIG_VARIABLE)
    if not raw:
        raise AppError(f"{CONFIG_VARIABLE} is not set: start the page with bonify-app --model ...")
    return json.loads(raw)


_LOADING = threading.Lock()


def loaded_predictor(config: dict):
    """The process's one Predictor for the page's models (loaded on the first call; Streamlit
    sessions are threads, so a second caller waits for the first load instead of
    repeating it)."""
    with _LOADING:
        return _load_predictor(
            tuple(config["models"]), config.get("image_size"), config.get("resize")
        )


@functools.cache
def _load_predictor(models: tuple[str, ...], image_size: int | None, resize: str | None):
    from serve.core import Predictor

    return Predictor.load(list(models), image_size=image_size, resize=resize)


def render_page() -> None:
    """Draw the page; Streamlit reruns this on every interaction."""
    import streamlit as st

    st.set_page_config(page_title="bonify", layout="wide")
    config = page_config()
    # Loaded once per server process (by serve.app_server before the port opened), shared by
    # every session; not once per upload.
    with st.spinner("Loading the model ..."):
        predictor = loaded_predictor(config)

    with st.sidebar:
        st.header("Model card")
        st.warning(DISCLAIMER)
        card = predictor.card
        for line in card_lines(card.raw if card else None, predictor.threshold):
            st.markdown(line)

    st.title("bonify: which body part, normal or abnormal?")
    st.caption(DISCLAIMER)
    known = st.selectbox("Body part is known", [NOT_KNOWN, *REGIONS], key="known_region")
    uploads = st.file_uploader(
        "Radiographs of one study (PNG, JPEG or DICOM)",
        accept_multiple_files=True,
        key="uploads",
    )
    if not uploads:
        st.info("Upload one or several images of one study.")
        return
    answer_of = st.cache_data(max_entries=64, show_spinner="Reading the image ...")(_answer)
    answers = []
    for upload in uploads:
        answer = answer_of(predictor, tuple(config["models"]), upload.getvalue(), upload.name)
        answers.append(answer)
        if not hasattr(answer, "probs"):  # a Rejection
            st.error(f"{upload.name}: {answer.reason} ({answer.detail})")
            continue
        _show_image(st, answer, upload.name, known, predictor.threshold)
    if any(hasattr(answer, "probs") for answer in answers):
        _show_study(st, predictor, answers, known)


def _answer(_predictor, models: tuple[str, ...], data: bytes, name: str):
    """The predictor's answer (an ImageAnswer or a Rejection), cached by the models, the bytes
    and the name so that changing the selector does not run the model again. Anything the
    predictor raises becomes a Rejection too: one bad file never stops the page or the
    other files."""
    from serve.core import Rejection

    try:
        return _predictor.answer(data, name, gradcam=True)
    except Exception as error:  # noqa: BLE001 - the page must keep serving
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Rejection(name, type(error).__name__, first or "cannot be read")


def _status(p_abnormal: float, threshold: float) -> tuple[str, float]:
    from serve.studies import status_of

    status = status_of(p_abnormal, threshold)
    return status, (p_abnormal if status == "abnormal" else 1.0 - p_abnormal)


def _show_image(st, answer, name: str, known: str, threshold: float) -> None:
    import pandas as pd

    st.subheader(name)
    left, right, facts = st.columns([2, 2, 2])
    left.image(answer.original, caption="original", clamp=True)
    if getattr(answer, "overlay_png", None):
        right.image(answer.overlay_png, caption="Grad-CAM (evidence for the predicted class)")
    if known == NOT_KNOWN:
        region, status, confidence = answer.region, answer.status, answer.confidence
    else:
        region = known
        status, confidence = _status(
            region_given_probability(answer.probabilities, known), threshold
        )
    facts.metric("Region", region)
    facts.metric("Status", status)
    facts.metric("Confidence", f"{confidence:.3f}")
    top3 = pd.DataFrame(
        [(label, f"{p:.3f}") for label, p in answer.top3], columns=["class", "probability"]
    )
    facts.table(top3.set_index("class"))


def _show_study(st, predictor, answers: list, known: str) -> None:
    study = predictor.study(answers)
    left_out = f"; {study['left_out']} unreadable left out" if study["left_out"] else ""
    st.header(f"Study ({study['images']} image{'s' if study['images'] != 1 else ''}{left_out})")
    if known == NOT_KNOWN:
        p_abnormal, verdict, region = study["p_abnormal"], study["verdict"], study["region"]
    else:
        # The region-given probability, averaged like the study's P(abnormal) is.
        p_abnormal = float(
            np.mean(
                [
                    region_given_probability(answer.probabilities, known)
                    for answer in answers
                    if hasattr(answer, "probs")
                ]
            )
        )
        verdict, _ = _status(p_abnormal, predictor.threshold)
        region = known
    first, second, third = st.columns(3)
    first.metric("Study P(abnormal)", f"{p_abnormal:.3f}")
    second.metric("Study verdict", verdict)
    third.metric("Study region", region)
    st.caption(f"Verdict at the model card's threshold {predictor.threshold:g}. {DISCLAIMER}")


if __name__ == "__main__":
    console_main()
