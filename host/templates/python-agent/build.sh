#!/bin/sh
# Build the component {{crate}}.wasm with componentize-py 0.25.1
# (`pip install componentize-py==0.25.1`, in a virtualenv; or set
# COMPONENTIZE_PY to its path). The WIT contract and the SDK come from the
# warden checkout this project was made from.
set -e
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=1
exec "${COMPONENTIZE_PY:-componentize-py}" -d {{wit_sh}} -w {{world}} componentize \
    -p . -p {{python_sdk_sh}} app -o {{crate}}.wasm
