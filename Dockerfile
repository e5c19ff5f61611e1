# bonify's images, two stages of this file (docs/DEPLOY.md):
#
# dataflow-worker: the workers of bonify-preprocess's and bonify-eval's Beam jobs on Dataflow,
#   docker build --target dataflow-worker --build-arg BEAM_VERSION=2.77.0 -t REGISTRY/bonify-worker:TAG .
#   bonify-preprocess ... --runner=DataflowRunner --sdk_container_image=REGISTRY/bonify-worker@sha256:DIGEST
#
# the last stage (the default target): one image for the three stages and for serving a model
# (docs/SERVING.md). Run one by naming its command:
#   docker run IMAGE bonify-preprocess --input_dir ... --output_dir ...
#   docker run --gpus all IMAGE bonify-train --data_dir ... --job_dir ...
#   docker run IMAGE bonify-eval --model ... --data_dir ... --output_dir ...
#   docker run -p 8000:8000 IMAGE bonify-serve --model JOB --host 0.0.0.0 --port 8000
#   docker run -p 8501:8501 IMAGE bonify-app --model JOB --host 0.0.0.0 --port 8501

# Beam's Python 3.11 SDK image of the Beam release setup.py pins (tests/deploy checks the
# default): its /opt/apache/beam/boot, the ENTRYPOINT, starts the SDK worker. Launch the job
# with the same Python minor version and Beam version as the image.
ARG BEAM_VERSION=2.77.0

# ---- Dataflow workers -------------------------------------------------------------------
FROM apache/beam_python3.11_sdk:${BEAM_VERSION} AS dataflow-worker

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1

WORKDIR /src
COPY . .
# bonify with setup.py's pins, TensorFlow included (the evaluator's RunInference DoFns load the
# model on the workers). The constraint keeps the image's own Beam: the SDK harness that boot
# starts must be the release the image was built for. `pip check` fails the build on a conflict
# with the SDK image's packages, instead of on a worker at start. The imports run outside /src
# so that they load the installed package, as a worker does.
RUN python -c "import apache_beam; print('apache-beam==' + apache_beam.__version__)" > /tmp/beam.txt \
    && python -m pip install --no-cache-dir --constraint /tmp/beam.txt . \
    && python -m pip check \
    && cd / \
    && python -c "import tensorflow, beam_preprocess.pipeline, eval.beam_inference" \
    && bonify-preprocess --help > /dev/null \
    && bonify-eval --help > /dev/null \
    && rm -rf /src /tmp/beam.txt

WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]

# ---- bonify: the stages and serving (the default target) --------------------------------
# The base image's TensorFlow is the version setup.py pins (tests/deploy/test_manifests.py
# checks), so `pip install .` keeps it instead of downloading a second copy.
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_CPP_MIN_LOG_LEVEL=1

# Same numeric uid/gid as runAsUser/runAsGroup in k8s/ (a high uid no base image uses).
RUN groupadd --gid 10001 bonify \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/bonify bonify

WORKDIR /src
COPY . .
# Non-editable install with setup.py's pins and the extras `app` (Streamlit, bonify-app) and
# `serve` (FastAPI + uvicorn, bonify-serve), then check every command exists.
RUN python -m pip install --no-cache-dir ".[app,serve]" \
    && bonify-preprocess --help > /dev/null \
    && bonify-train --help > /dev/null \
    && bonify-eval --help > /dev/null \
    && bonify-predict --help > /dev/null \
    && bonify-serve --help > /dev/null \
    && bonify-app --help > /dev/null \
    && rm -rf /src

WORKDIR /home/bonify
USER 10001:10001

CMD ["bonify-train", "--help"]
