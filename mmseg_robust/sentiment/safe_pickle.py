"""Loading pickles without running their code.

A pickle names callables that the loader calls (``os.system`` is as easy to name as
``numpy.ndarray``). The unpickler below resolves only builtin containers and scalars and numpy's
array, dtype and scalar reconstruction, as numpy 1.x (``numpy.core``) and 2.x (``numpy._core``)
write them at any protocol; any other name stops the load before anything is called.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmseg_robust.sentiment.errors import SentimentDataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

#: The only text encoding protocol-2 pickles use to store bytes (``_codecs.encode(text, "latin1")``).
_BYTES_ENCODING = "latin1"
#: Python 2 pickles name the builtins module ``__builtin__``.
_PYTHON2_MODULES = {"__builtin__": "builtins"}
#: Builtin types a pickle may construct through a global (protocol < 4 sets, for instance).
_BUILTIN_TYPES = (set, frozenset, list, dict, tuple, bytes, bytearray, str, int, float, complex, bool, range,
                  slice)


def _encode_bytes(text: str, encoding: str = _BYTES_ENCODING) -> bytes:
    """``_codecs.encode`` restricted to the one encoding pickles use for bytes (no codec lookup)."""
    if encoding != _BYTES_ENCODING:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding)


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("builtins", kind.__name__): kind for kind in _BUILTIN_TYPES}
    allowed[("_codecs", "encode")] = _encode_bytes
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only builtin containers and scalars and numpy arrays.

    Raises:
        SentimentDataError: when the pickle names any other global (nothing has been called).
    """

    def __init__(self, file, path: str | Path) -> None:
        # latin1 reads the byte strings of Python 2 numpy pickles as numpy expects.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = _PYTHON2_MODULES.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise SentimentDataError(
                f"{self._path}: refused to load: the pickle references {module}.{name}, which is not a numpy "
                f"array or builtin container (pickles can run code when loaded; nothing was run)") from None


def load_pickle(path: str | Path) -> Any:
    """Load ``path`` through :class:`RestrictedUnpickler`.

    Raises:
        SentimentDataError: the file is missing, empty, truncated, not a pickle, or references a
            global other than builtin containers/scalars and numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise SentimentDataError(f"{path}: no such file")
    with open(path, "rb") as handle:
        try:
            return RestrictedUnpickler(handle, path).load()
        except SentimentDataError:
            raise
        except EOFError:
            raise SentimentDataError(f"{path}: the pickle is empty or truncated") from None
        except pickle.UnpicklingError as error:
            problem = "the pickle is truncated" if "truncated" in str(error) else f"not a readable pickle ({error})"
            raise SentimentDataError(f"{path}: {_one_line(problem)}") from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
                UnicodeDecodeError, OverflowError) as error:
            raise SentimentDataError(f"{path}: not a readable pickle "
                                     f"({type(error).__name__}: {_one_line(str(error))})") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
