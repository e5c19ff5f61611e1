# bonify: one image for the three stages (docs/DEPLOY.md). Run a stage by naming its command:
#   docker run IMAGE bonify-preprocess --input_dir ... --output_dir ...
#   docker run --gpus all IMAGE bonify-train --data_dir ... --job_dir ...
#   docker run IMAGE bonify-eval --model ... --data_dir ... --output_dir ...
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
# Non-editable install with setup.py's pins, then check every stage's command exists.
RUN python -m pip install --no-cache-dir . \
    && bonify-preprocess --help > /dev/null \
    && bonify-train --help > /dev/null \
    && bonify-eval --help > /dev/null \
    && rm -rf /src

WORKDIR /home/bonify
USER 10001:10001

CMD ["bonify-train", "--help"]
