# aidetect image: runs the notebooks with papermill (Vertex AI custom job / Workbench on a T4) and,
# with `--target serve`, the prediction service.
#   docker build -t aidetect .
#   docker run --gpus all -v "$PWD/outputs:/app/outputs" aidetect \
#       aidetect train -f params/demo.yaml -p device cuda
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIDETECT_CACHE=/app/.cache/aidetect \
    MPLBACKEND=Agg
WORKDIR /app
# torch's Linux wheels on PyPI carry CUDA: the same image trains on a T4 and on the CPU.
RUN pip install "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY aidetect ./aidetect
# The project itself, whose dependencies are ranged in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[serve]" \
    && python -m ipykernel install --sys-prefix --name python3
COPY nbs ./nbs
COPY params ./params
RUN useradd --create-home --uid 1000 aidetect && mkdir -p outputs .cache && chown -R 1000 /app
USER 1000

FROM base AS train
# papermill writes the executed notebook into the run folder, which must exist (outputs/ may be a mounted volume).
CMD ["sh", "-c", "mkdir -p outputs/demo && exec papermill nbs/train.ipynb outputs/demo/train.ipynb -f params/demo.yaml"]

# The prediction service: mount a run folder (it must be writable by uid 1000 for the prediction log) and
#   docker build --target serve -t aidetect-serve .
#   docker run -p 8000:8000 -v "$PWD/outputs/demo:/app/outputs/demo" aidetect-serve
# For ONNX Runtime, give the whole command after the image name:
#   docker run -p 8000:8000 -v "$PWD/outputs/demo:/app/outputs/demo" aidetect-serve \
#       aidetect serve --checkpoint /app/outputs/demo --host 0.0.0.0 --port 8000 --backend onnx
FROM base AS serve
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["aidetect", "serve", "--checkpoint", "/app/outputs/demo", "--host", "0.0.0.0", "--port", "8000"]

# The default target (a plain `docker build`) is the training image.
FROM train
