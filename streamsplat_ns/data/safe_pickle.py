"""Restricted loading of pickles and ``torch.save`` zip archives from untrusted datasets.

RE10K depth companions (``depth_<chunk>.pt``) are plain pickles in the official code and may be
``torch.save`` zips when re-saved; the ``.torch`` image chunks are ``torch.save`` zips. Neither is
loaded with :mod:`pickle` directly: :class:`RestrictedUnpickler` admits only plain containers,
numpy arrays/dtypes/scalars and torch tensors rebuilt *by us* from their storages, so a malicious
pickle cannot run code. :class:`TorchZipReader` reads ``data.pkl`` only and fetches a storage from
the archive when a tensor is actually used, so one clip can be read from a 100 MB chunk without
reading the rest.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from streamsplat_ns.data.errors import DataError

# torch legacy typed-storage names as they appear in data.pkl -> numpy dtype
_STORAGE_DTYPES: Dict[str, Any] = {
    "ByteStorage": np.uint8,
    "CharStorage": np.int8,
    "ShortStorage": np.int16,
    "IntStorage": np.int32,
    "LongStorage": np.int64,
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "BoolStorage": np.bool_,
    "UInt16Storage": np.uint16,
    "UInt32Storage": np.uint32,
    "UInt64Storage": np.uint64,
}


class UnsafePickleError(DataError):
    """The pickle references a global that is not on the allow-list (possibly malicious)."""


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any
    numel: int


class StoredTensor:
    """A tensor inside a torch zip archive, read on demand (``.numpy()``, ``.tobytes()``)."""

    def __init__(
        self,
        reader: "TorchZipReader",
        storage: _StorageRef,
        offset: int,
        shape: Tuple[int, ...],
        stride: Tuple[int, ...],
    ):
        self._reader, self._storage, self._offset = reader, storage, int(offset)
        self.shape, self.stride = tuple(int(s) for s in shape), tuple(int(s) for s in stride)
        self.dtype = np.dtype(storage.dtype)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def numpy(self) -> np.ndarray:
        raw = self._reader.read_storage(self._storage)
        flat = np.frombuffer(raw, dtype=self.dtype)
        if flat.size != self._storage.numel:
            raise DataError(
                f"{self._reader.path}: storage {self._storage.key} has {flat.size} elements, "
                f"data.pkl says {self._storage.numel}; the file is truncated or corrupt, re-download it"
            )
        if self.numel == 0:
            return np.zeros(self.shape, self.dtype)
        itemsize = self.dtype.itemsize
        need = self._offset + sum((s - 1) * st for s, st in zip(self.shape, self.stride)) + 1
        if need > flat.size:
            raise DataError(f"{self._reader.path}: tensor view exceeds storage {self._storage.key}; corrupt file")
        return np.lib.stride_tricks.as_strided(
            flat[self._offset :], self.shape, tuple(st * itemsize for st in self.stride)
        ).copy()

    def tobytes(self) -> bytes:
        """Raw bytes of a contiguous 1-D uint8 tensor (the JPEG payloads of RE10K chunks)."""
        if len(self.shape) == 1 and (self.stride in ((1,), ()) or self.shape[0] <= 1):
            raw = self._reader.read_storage(self._storage)
            end = self._offset + self.numel
            if end > len(raw):
                raise DataError(f"{self._reader.path}: storage {self._storage.key} is truncated; re-download it")
            return bytes(raw[self._offset : end])
        return self.numpy().tobytes()

    def __repr__(self) -> str:
        return f"StoredTensor(shape={self.shape}, dtype={self.dtype})"


def _np_reconstruct():
    from numpy.core import multiarray  # numpy 1.x name; numpy 2 keeps it as an alias

    return multiarray._reconstruct


def _np_scalar():
    from numpy.core import multiarray

    return multiarray.scalar


def _allowed_numpy(module: str, name: str) -> Optional[Any]:
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        if name == "_reconstruct":
            return _np_reconstruct()
        if name == "scalar":
            return _np_scalar()
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        from numpy.core import numeric

        return numeric._frombuffer
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes as npd

        cls = getattr(npd, name, None)
        if isinstance(cls, type):
            return cls
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for plain containers + numpy arrays (+ torch tensors when ``reader`` is given).

    Tensors are never rebuilt through torch: ``torch._utils._rebuild_tensor_v2`` is replaced by a
    function that returns a :class:`StoredTensor` (lazy) or a numpy array (``materialize=True``).
    """

    _SAFE_BUILTINS = {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "slice"),
        ("builtins", "tuple"),
        ("builtins", "list"),
        ("builtins", "dict"),
    }

    def __init__(
        self, file, *, reader: Optional["TorchZipReader"] = None, materialize: bool = False, source: str = "<pickle>"
    ):
        super().__init__(file)
        self._reader, self._materialize, self._source = reader, materialize, source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._SAFE_BUILTINS:
            import builtins
            import collections

            return getattr(collections if module == "collections" else builtins, name)
        found = _allowed_numpy(module, name)
        if found is not None:
            return found
        if self._reader is not None:
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return self._rebuild_tensor
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name)
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}' (only plain containers, numpy arrays "
            f"and tensors are allowed). The file is not a dataset file of the expected format, or it is malicious."
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._reader is None or not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r}")
        stype, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(stype, _StorageType):
            raise UnsafePickleError(f"{self._source}: unsupported storage type {stype!r}")
        return _StorageRef(str(key), stype.dtype, int(numel))

    def _rebuild_tensor(self, storage, storage_offset, size, stride, *_ignored):
        if not isinstance(storage, _StorageRef):
            raise UnsafePickleError(f"{self._source}: malformed tensor record")
        t = StoredTensor(self._reader, storage, storage_offset, tuple(size), tuple(stride))
        return t.numpy() if self._materialize else t


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class TorchZipReader:
    """Lazy, restricted reader for a ``torch.save`` zip archive.

    The handle is reopened after ``fork`` (DataLoader workers must not share a file offset).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._zip: Optional[zipfile.ZipFile] = None
        self._pid = -1
        zf = self._handle()
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise DataError(f"{self.path}: not a torch.save archive (no <name>/data.pkl); the file is corrupt")
        self._prefix = pkl[0][: -len("data.pkl")]
        bo = self._prefix + "byteorder"
        if bo in names and zf.read(bo).decode().strip() not in ("little", ""):
            raise DataError(f"{self.path}: big-endian torch archives are not supported")

    def _handle(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(
                    f"{self.path}: cannot open as a torch zip archive ({e}); the file is truncated "
                    f"or corrupt, re-download or re-create it"
                ) from e
            self._pid = os.getpid()
        return self._zip

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_zip"], d["_pid"] = None, -1
        return d

    def read_storage(self, ref: _StorageRef) -> bytes:
        name = f"{self._prefix}data/{ref.key}"
        try:
            return self._handle().read(name)
        except KeyError as e:
            raise DataError(
                f"{self.path}: storage '{name}' is missing; the archive is truncated, re-download it"
            ) from e
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # CRC errors, short reads
            raise DataError(f"{self.path}: cannot read storage '{name}' ({e}); the archive is corrupt") from e

    def load(self, materialize: bool = False) -> Any:
        try:
            raw = self._handle().read(self._prefix + "data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
            raise DataError(f"{self.path}: cannot read data.pkl ({e}); the archive is corrupt") from e
        try:
            return RestrictedUnpickler(
                io.BytesIO(raw), reader=self, materialize=materialize, source=str(self.path)
            ).load()
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
            raise DataError(f"{self.path}: cannot unpickle data.pkl ({type(e).__name__}: {e})") from e


def is_torch_zip(path: Union[str, Path]) -> bool:
    return zipfile.is_zipfile(path)


def safe_load(path: Union[str, Path], materialize: bool = True) -> Any:
    """Load a plain pickle or a ``torch.save`` zip with the restricted unpickler.

    Tensors come back as numpy arrays (``materialize=True``) or :class:`StoredTensor` (lazy).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if is_torch_zip(path):
        return TorchZipReader(path).load(materialize=materialize)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, source=str(path)).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(
            f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file is truncated or corrupt, re-create it"
        ) from e


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of a StoredTensor / numpy array / torch tensor."""
    if isinstance(x, StoredTensor):
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_bytes(x: Any) -> bytes:
    if isinstance(x, StoredTensor):
        return x.tobytes()
    if isinstance(x, (bytes, bytearray)):
        return bytes(x)
    return to_numpy(x).tobytes()


Loader = Callable[[Union[str, Path]], Any]
