"""Regenerates the numpy decoder fixtures (host/src/input/numpy.rs tests).

Run once under numpy 1.x and once under numpy 2.x, from this folder:
    python -m venv /tmp/npvenv1 && /tmp/npvenv1/bin/pip install 'numpy<2' && /tmp/npvenv1/bin/python gen.py
    python -m venv /tmp/npvenv  && /tmp/npvenv/bin/pip install numpy     && /tmp/npvenv/bin/python gen.py
Each run writes fixtures_numpy<MAJOR>.bin: records of b"name\\n<decimal length>\\n<bytes>".
Nothing is unpickled here; the "evil" pickles are only serialized, never loaded.
"""
import builtins
import io
import os
import pickle
import subprocess

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct


def pixels(shape):
    # Distinct values, some >= 0x80 so protocol 2's latin1 path is exercised.
    n = int(np.prod(shape))
    return ((np.arange(n) * 7 + 3) % 256).astype(np.uint8).reshape(shape)


rgb = pixels((3, 4, 3))
big = np.zeros((3, 8, 3), np.uint8)
big[:, ::2] = rgb
readonly = rgb.copy()
readonly.flags.writeable = False

ARRAYS = {
    "rgb": rgb,
    "gray": pixels((2, 5)),
    "rgba": pixels((2, 2, 4)),
    "hwc1": pixels((2, 3, 1)),
    "tall": pixels((257, 2)),  # a dimension > 255 is pickled as BININT2
    "rgb_fortran": np.asfortranarray(rgb),
    "gray_fortran": np.asfortranarray(pixels((2, 5))),
    "rgb_strided": big[:, ::2],  # not contiguous: protocol 5 falls back to _reconstruct
    "rgb_readonly": readonly,  # protocol 5: bytes instead of bytearray
}


class Reduce:
    """Pickles as whatever __reduce__ says, to craft hostile-but-valid pickles."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        return self.value


EVIL = {
    "evil_os_system": (os.system, ("echo pwned",)),
    "evil_eval": (builtins.eval, ("__import__('os').system('echo pwned')",)),
    "evil_popen": (subprocess.Popen, (["echo", "pwned"],)),
    "huge_shape": (
        _reconstruct,
        (np.ndarray, (0,), b"b"),
        (1, (100000, 100000, 3), np.dtype("u1"), False, b"tiny"),
    ),
    "short_data": (
        _reconstruct,
        (np.ndarray, (0,), b"b"),
        (1, (2, 2, 3), np.dtype("u1"), False, b"short"),
    ),
}

records = []
for name, arr in ARRAYS.items():
    for proto in (2, 3, 4, 5):
        records.append((f"{name}.p{proto}", pickle.dumps(arr, protocol=proto)))
    if arr.flags.c_contiguous or arr.flags.f_contiguous:
        buf = io.BytesIO()
        np.save(buf, arr)
        records.append((f"{name}.npy", buf.getvalue()))
for version in ((2, 0), (3, 0)):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, rgb, version=version)
    records.append((f"rgb.npy_v{version[0]}", buf.getvalue()))

for name, value in EVIL.items():
    for proto in (2, 4, 5):
        records.append((f"{name}.p{proto}", pickle.dumps(Reduce(value), protocol=proto)))
BAD_ARRAYS = {
    "float64": np.zeros((2, 2, 3), np.float64),
    "int16": np.zeros((2, 2), np.int16),
    "objects": np.array([1, "a"], dtype=object),
    "batch4d": np.zeros((1, 2, 2, 3), np.uint8),
    "twochan": np.zeros((2, 2, 2), np.uint8),
    "vector": np.zeros(6, np.uint8),
}
for name, arr in BAD_ARRAYS.items():
    for proto in (2, 5):
        records.append((f"{name}.p{proto}", pickle.dumps(arr, protocol=proto)))
    if arr.dtype != object:
        buf = io.BytesIO()
        np.save(buf, arr)
        records.append((f"{name}.npy", buf.getvalue()))

out = f"fixtures_numpy{np.__version__.split('.')[0]}.bin"
with open(out, "wb") as f:
    for name, data in records:
        f.write(name.encode() + b"\n" + str(len(data)).encode() + b"\n" + data)
print(out, np.__version__, len(records), "records")
