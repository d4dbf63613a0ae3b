#!/usr/bin/env bash
# Creates the peer venvs that benchmarks/peers.py compares archlab with:
#   benchmarks/.venvs/tf   tensorflow + keras 3 (peers.py sets KERAS_BACKEND=tensorflow)
#   benchmarks/.venvs/jax  jax[cpu]   + keras 3 (peers.py sets KERAS_BACKEND=jax)
# The plain PyTorch peer uses the main environment's torch; archlab itself gains
# no dependency. Downloads about 1 GB from the pip registry; not run by CI.
#
#   nice -n 10 bash benchmarks/setup_peers.sh          # both venvs
#   nice -n 10 bash benchmarks/setup_peers.sh jax      # just one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
venvs="$here/.venvs"
mkdir -p "$venvs"

make_venv() {  # name, pip requirements...
    local name="$1"; shift
    local dir="$venvs/$name"
    if [ ! -x "$dir/bin/python" ]; then
        "$python" -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --upgrade pip
    fi
    "$dir/bin/python" -m pip install --quiet "$@"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(tf jax)
for t in "${targets[@]}"; do
    case "$t" in
        tf)  make_venv tf "tensorflow>=2.16" "keras>=3" numpy
             KERAS_BACKEND=tensorflow "$venvs/tf/bin/python" -c \
                 "import keras, tensorflow as tf; print('tf venv:', 'tensorflow', tf.__version__, 'keras', keras.__version__)" ;;
        jax) make_venv jax "jax[cpu]" "keras>=3" numpy
             KERAS_BACKEND=jax "$venvs/jax/bin/python" -c \
                 "import keras, jax; print('jax venv:', 'jax', jax.__version__, 'keras', keras.__version__)" ;;
        *)   echo "unknown peer venv '$t' (expected tf or jax)" >&2; exit 2 ;;
    esac
done
