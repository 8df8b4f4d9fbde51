"""Restricted unpickling: RE10K depth companions must never execute code."""

import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from streamsplat_ns.data.safe_pickle import StoredTensor, TorchZipReader, UnsafePickleError, safe_load


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_plain_pickle_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "depth_000000.pt"
    p.write_bytes(pickle.dumps({"key": ["a"], "predicted_depth_norm": [_Evil(marker)]}))
    with pytest.raises(UnsafePickleError, match="system"):
        safe_load(p)
    assert not marker.exists()


def test_malicious_pickle_inside_torch_zip_does_not_execute(tmp_path):
    marker = tmp_path / "pwned2"
    good = tmp_path / "good.pt"
    torch.save({"key": ["a"]}, good)
    bad = tmp_path / "depth_000001.pt"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item.endswith("data.pkl"):
                data = pickle.dumps([_Evil(marker)])
            zout.writestr(item, data)
    with pytest.raises(UnsafePickleError, match="system"):
        safe_load(bad)
    assert not marker.exists()


def test_plain_containers_numpy_and_torch_zip_load(tmp_path):
    arrs = [np.arange(24, dtype=np.uint16).reshape(2, 3, 4), np.ones((1, 2, 2), np.uint8)]
    p = tmp_path / "plain.pt"
    p.write_bytes(pickle.dumps({"key": ["x", "y"], "predicted_depth_norm": arrs}, protocol=4))
    d = safe_load(p)
    assert d["key"] == ["x", "y"] and np.array_equal(d["predicted_depth_norm"][0], arrs[0])
    t = tmp_path / "zip.pt"
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save({"a": x, "b": x[:, 1], "n": [torch.tensor([1, 2], dtype=torch.uint8)]}, t)
    d = safe_load(t)
    assert np.array_equal(d["a"], x.numpy()) and np.array_equal(d["b"], x[:, 1].numpy())  # strided view
    lazy = TorchZipReader(t).load(materialize=False)
    assert isinstance(lazy["a"], StoredTensor) and lazy["n"][0].tobytes() == b"\x01\x02"


def test_garbage_is_a_clear_error(tmp_path):
    p = tmp_path / "depth_000002.pt"
    p.write_bytes(b"\x80\x04garbage")
    with pytest.raises(Exception, match="depth_000002.pt"):
        safe_load(p)
