# syntax=docker/dockerfile:1
# The trainer image, run by the chart's CronJob: fit, evaluate, gate and register a model version.
#   docker build -f docker/trainer.Dockerfile --build-arg VERSION=... --build-arg GIT_SHA=$(git rev-parse HEAD) \
#     -t model-trainer:dev .
# Dependencies come from requirements-runtime.lock (hash-pinned); nothing is compiled.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements-runtime.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY model_registry ./model_registry
COPY model_server ./model_server
COPY prediction_log ./prediction_log
COPY rollout ./rollout
COPY serving_common ./serving_common
COPY trainer ./trainer
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv
# What the runtime never uses: pip and setuptools, and the packages' own test suites (115 MB:
# pandas, scipy, numpy, scikit-learn, pyarrow, kubernetes). The bytecode stays: it spares every
# cold start (Knative scales from zero) the compilation of some 400 modules.
RUN /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools \
    && find /opt/venv/lib -depth -type d \( -name tests -o -name test \) -path '*/site-packages/*' \
       -exec rm -rf {} + \
    && find /opt/venv/bin -name 'pip*' -delete

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.0.0
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="model-trainer" \
      org.opencontainers.image.description="Trains, evaluates, gates and registers scikit-learn model versions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
# TRAINER_GIT_SHA lands in every registered version's provenance.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRAINER_LOG_FORMAT=json \
    TRAINER_GIT_SHA=${GIT_SHA}
USER 10001:10001
ENTRYPOINT ["model-trainer"]
