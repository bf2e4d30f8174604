#!/bin/sh
# The images' `stripped` stage (aggregator and site Dockerfiles, linked beside each): strip
# --strip-unneeded, as Debian does to every package, over the venv's shared libraries. torch's
# libtorch_cpu.so ships its static symbol table (89 MB) and uvloop its debug info: about 145 MB
# off, what the dynamic linker needs kept. Left as shipped: auditwheel's vendored *.libs
# (patchelf-edited) and the CUDA libraries (nvidia/, *cuda*: device code no GPU here can check).
set -eu
command -v strip >/dev/null || {
    echo "the tools image has no strip: use one with binutils (nbfed build-images --tools-image)" >&2
    exit 1
}
find "${1:-/opt/venv}/lib/python3.11/site-packages" \( -name '*.libs' -o -name nvidia \) -prune \
    -o -type f \( -name '*.so' -o -name '*.so.*' \) ! -name '*cuda*' -print0 |
    xargs -0 --no-run-if-empty strip --strip-unneeded
