"""Property-based fuzzing of every reader (issue 18, point 2): valid files of each raw format, mutated by
Hypothesis (truncation, byte flips weighted towards the header, appended garbage, zeroed spans, and
structured lies: NaN/inf images, missing keys, shape and dtype mismatches, enormous declared shapes,
duplicated or missing DICOM slices).

Invariant: reading the dataset the way ``versemi prepare --verify`` does (:func:`versemi.data.prepare.verify_raw`;
for the external BTCV set :func:`versemi.data.external.verify_external`) returns problems that name the mutated file, or none when the mutation left the data valid; it never raises
anything else and never hangs. Every example runs in-process. ``VERSEMI_FUZZ_EXAMPLES`` sets the examples per
format (default 200); each test asserts that many were tried and prints the count.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from versemi.data.external import verify_external
from versemi.data.prepare import verify_raw

from ..factories import (
    ct_volume,
    lps_like_affine,
    mri_volume,
    write_flat,
    write_la_h5,
    write_la_nrrd,
    write_msd,
    write_pancreas_case,
)

EXAMPLES = int(os.environ.get("VERSEMI_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
TRIED: dict[str, int] = {}
REPORTED: dict[str, int] = {}   # examples whose mutation the readers reported as a problem

# one byte-level mutation: (kind, position fraction, header weighted, payload)
MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.booleans(), st.binary(max_size=0)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.booleans(), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.booleans(), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("append"), st.floats(0, 1), st.booleans(), st.binary(min_size=1, max_size=64)),
)


def mutate(data: bytes, mutation, header: int) -> bytes:
    """Apply one byte-level mutation; positions fall in the first ``header`` bytes when weighted."""
    kind, where, in_header, payload = mutation
    span = min(header, len(data)) if in_header else len(data)
    pos = min(int(where * span), max(len(data) - 1, 0))
    if kind == "truncate":
        return data[:pos]
    if kind == "flip":
        out = bytearray(data)
        for i, b in enumerate(payload):
            if pos + i < len(out):
                out[pos + i] ^= b or 0xFF
        return bytes(out)
    if kind == "zero":
        return data[:pos] + bytes(len(payload)) + data[pos + len(payload):]
    return data + payload


def check(src: Path, dataset: str, names: set[str], fmt: str) -> None:
    """The invariant: problems (if any) each name the mutated file; no other exception (the caller)."""
    TRIED[fmt] = TRIED.get(fmt, 0) + 1
    problems = verify_external(dataset, src) if dataset == "btcv" else verify_raw([dataset], src)
    REPORTED[fmt] = REPORTED.get(fmt, 0) + bool(problems)
    for p in problems:
        assert any(n in p for n in names), (fmt, p)


def run_bytes(path: Path, src: Path, dataset: str, names: set[str], fmt: str, header: int, gz: bool = False):
    """The byte-level property of one file, restored after every example."""
    original = path.read_bytes()
    plain = gzip.decompress(original) if gz else original

    @FUZZ
    @given(mutation=MUTATION, whole_gz=st.booleans())
    def prop(mutation, whole_gz):
        try:
            if gz and whole_gz:   # the compressed stream itself
                path.write_bytes(mutate(original, mutation, 64))
            else:
                new = mutate(plain, mutation, header)
                path.write_bytes(gzip.compress(new, mtime=0) if gz else new)
            check(src, dataset, names, fmt)
        finally:
            path.write_bytes(original)

    prop()
    assert TRIED[fmt] >= EXAMPLES
    assert REPORTED.get(fmt, 0) > 0, f"{fmt}: no mutation was ever reported; the fuzzing does not reach the checks"
    print(f"{fmt}: {TRIED[fmt]} examples ({REPORTED[fmt]} reported as problems), no violation")


def weird_arrays():
    """Arrays a broken export could hold: NaN/inf, empty, wrong rank or dtype."""
    return st.sampled_from(["nan", "inf", "empty", "2d", "4d", "bool", "complex", "strings", "huge_int"])


def make_weird(kind: str, shape) -> np.ndarray:
    if kind == "nan":
        a = np.zeros(shape, np.float32)
        a[0, 0, 0] = np.nan
        return a
    if kind == "inf":
        a = np.zeros(shape, np.float32)
        a[-1, -1, -1] = np.inf
        return a
    if kind == "empty":
        return np.zeros((0, *shape[1:]), np.float32)
    if kind == "2d":
        return np.zeros(shape[:2], np.float32)
    if kind == "4d":
        return np.zeros((*shape, 2), np.float32)
    if kind == "bool":
        return np.ones(shape, bool)
    if kind == "complex":
        return np.zeros(shape, np.complex64)
    if kind == "strings":
        return np.array([b"a", b"b"])
    return np.full(shape, 2**40, np.int64)


# ------------------------------------------------------------------------------------------------- NIfTI / MSD
@pytest.fixture()
def msd(tmp_path):
    hu, lab = ct_volume(seed=1)
    folder = write_msd(tmp_path, "spleen", [("spleen_2", hu, lab), ("spleen_3", hu, lab)])
    return tmp_path, folder


def test_fuzz_nifti_images_of_an_msd_task(msd):
    src, folder = msd
    path = folder / "imagesTr" / "spleen_2.nii.gz"
    run_bytes(path, src, "spleen", {"spleen_2"}, "NIfTI (MSD image)", header=352, gz=True)


def test_fuzz_msd_dataset_json(msd):
    src, folder = msd
    run_bytes(folder / "dataset.json", src, "spleen", {"dataset.json", "Task09_Spleen"}, "MSD dataset.json",
              header=400)


# -------------------------------------------------------------------------------------------------- DICOM
@pytest.fixture()
def pancreas(tmp_path):
    series, lab_path, _ = write_pancreas_case(tmp_path, 1, seed=2)
    return tmp_path, series, lab_path


def test_fuzz_dicom_slices_of_the_nih_pancreas(pancreas):
    src, series, _ = pancreas
    path = sorted(series.glob("*.dcm"))[3]
    run_bytes(path, src, "pancreas", {"PANCREAS_0001", path.name}, "DICOM series (NIH Pancreas)", header=1200)


@FUZZ
@given(action=st.sampled_from(["drop", "duplicate", "rename", "empty_file"]), which=st.integers(0, 9))
def test_fuzz_dicom_series_structure(tmp_path_factory, action, which):
    src = tmp_path_factory.mktemp("dicom")
    series, _, _ = write_pancreas_case(src, 1, seed=3)
    files = sorted(series.glob("*.dcm"))
    f = files[which % len(files)]
    if action == "drop":
        f.unlink()
    elif action == "duplicate":
        shutil.copy(f, series / "copy.dcm")
    elif action == "rename":
        f.rename(series / "not-dicom.txt")
    else:
        f.write_bytes(b"")
    check(src, "pancreas", {"PANCREAS_0001", f.name}, "DICOM series structure")


# ------------------------------------------------------------------------------------------------ LA (h5, NRRD)
@pytest.fixture()
def la_h5(tmp_path):
    write_la_h5(tmp_path, ["CASE01", "CASE02"], train_list=["CASE01"], test_list=["CASE02"])
    return tmp_path


def test_fuzz_ua_mt_h5(la_h5):
    path = la_h5 / "2018LA_Seg_Training Set" / "CASE01" / "mri_norm2.h5"
    run_bytes(path, la_h5, "la", {"CASE01"}, "UA-MT h5 (LA)", header=2048)


@FUZZ
@given(key=st.sampled_from(["image", "label"]), weird=weird_arrays(), drop=st.booleans())
def test_fuzz_h5_contents(tmp_path_factory, key, weird, drop):
    src = tmp_path_factory.mktemp("la")
    write_la_h5(src, ["CASE01"], train_list=["CASE01"], test_list=[])
    path = src / "2018LA_Seg_Training Set" / "CASE01" / "mri_norm2.h5"
    with h5py.File(path, "a") as f:
        shape = f["image"].shape
        del f[key]
        if not drop:
            f.create_dataset(key, data=make_weird(weird, shape))
    check(src, "la", {"CASE01"}, "h5 contents (missing keys, NaN, shapes, dtypes)")


def test_fuzz_la_nrrd(tmp_path):
    write_la_nrrd(tmp_path, "ABC123")
    path = tmp_path / "ABC123" / "lgemri.nrrd"
    run_bytes(path, tmp_path, "la", {"ABC123", "lgemri.nrrd"}, "NRRD (LA challenge)", header=300)


# -------------------------------------------------------------------------------------- the authors' flat h5
def test_fuzz_authors_flat_h5(tmp_path):
    img, lab = mri_volume(seed=4)
    folder = write_flat(tmp_path / "spleen_h5", {"spleen_2": (img, lab)})
    run_bytes(folder / "spleen_2.h5", tmp_path, "spleen", {"spleen_2"}, "authors' flat h5", header=2048)


def test_fuzz_nifti_with_lying_header_fields(tmp_path):
    """Structured header lies: dims, pixdims, datatype and offsets set to hostile values."""
    import nibabel as nib

    hu, lab = ct_volume(seed=5)
    folder = write_msd(tmp_path, "spleen", [("spleen_2", hu, lab)])
    path = folder / "labelsTr" / "spleen_2.nii.gz"
    original = path.read_bytes()
    img = nib.load(str(path))
    fields = st.sampled_from([("dim", 1), ("dim", 2), ("dim", 3), ("dim", 0), ("pixdim", 1), ("pixdim", 3),
                              ("datatype", None), ("vox_offset", None), ("qform_code", None), ("sform_code", None)])
    values = st.sampled_from([0, -1, 1, 7, 2**15 - 1, float("nan"), float("inf"), -1e30, 1e30])

    @FUZZ
    @given(field=fields, value=values)
    def prop(field, value):
        name, index = field
        raw = bytearray(gzip.decompress(original))
        hdr = img.header.copy()
        try:
            arr = hdr[name].copy()
            if index is None:
                hdr[name] = value if np.isfinite(value) else 0
            else:
                arr[index] = value
                hdr[name] = arr
        except (ValueError, OverflowError, TypeError):
            return   # nibabel refuses to write this value at all
        raw[:348] = hdr.binaryblock
        try:
            path.write_bytes(gzip.compress(bytes(raw), mtime=0))
            check(tmp_path, "spleen", {"spleen_2"}, "NIfTI header lies")
        finally:
            path.write_bytes(original)

    prop()
    assert REPORTED.get("NIfTI header lies", 0) > 0
    print(f"NIfTI header lies: {TRIED['NIfTI header lies']} examples ({REPORTED['NIfTI header lies']} reported as "
          "problems), no violation")


# ---------------------------------------------------------------------------------- BTCV (external test set)
@pytest.fixture()
def btcv(tmp_path):
    from .test_btcv import organ_map, write_btcv

    base = write_btcv(tmp_path, {1: organ_map(6), 2: organ_map(7)})
    return tmp_path, base


def test_fuzz_btcv_image(btcv):
    src, base = btcv
    run_bytes(base / "img" / "img0001.nii.gz", src, "btcv", {"img0001"}, "NIfTI (BTCV image)", header=352, gz=True)


def test_fuzz_btcv_label(btcv):
    src, base = btcv
    run_bytes(base / "label" / "label0001.nii.gz", src, "btcv", {"label0001"}, "NIfTI (BTCV label)", header=352,
              gz=True)


@FUZZ
@given(kind=st.sampled_from(["fraction", "negative", "too_large", "no_spleen", "shape", "float_codes", "weird"]),
       weird=weird_arrays(), where=st.integers(0, 10**6))
def test_fuzz_btcv_label_contents(tmp_path_factory, kind, weird, where):
    from .test_btcv import organ_map, write_btcv

    src = tmp_path_factory.mktemp("btcv")
    hu, org = organ_map(8)
    base = write_btcv(src, {1: (hu, org)})
    arr = org.astype(np.float32)
    flat = arr.reshape(-1)
    i = where % flat.size
    if kind == "fraction":
        flat[i] += 0.25
    elif kind == "negative":
        flat[i] = -3
    elif kind == "too_large":
        flat[i] = 14 + where % 200
    elif kind == "no_spleen":
        arr[arr == 1] = 0
    elif kind == "shape":
        arr = arr[:, :, : 1 + where % (arr.shape[2] - 1)]
    elif kind == "weird":
        arr = make_weird(weird, arr.shape)
    try:
        write_nifti_any(base / "label" / "label0001.nii.gz", arr)
    except Exception:   # noqa: BLE001 - nibabel refuses to write this array at all
        return
    fmt = "BTCV label contents"
    before = REPORTED.get(fmt, 0)
    check(src, "btcv", {"label0001"}, fmt)
    if kind not in ("float_codes", "weird"):   # each of these is invalid: it must be reported
        assert REPORTED[fmt] == before + 1, kind


def write_nifti_any(path: Path, arr: np.ndarray) -> None:
    """``arr`` as NIfTI with the factory's geometry (the image's), whatever its dtype or rank."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, lps_like_affine()), str(path))


def test_every_format_was_fuzzed():
    """Runs last in this module: each format got its examples (the count each test printed)."""
    expected = {"NIfTI (MSD image)", "MSD dataset.json", "DICOM series (NIH Pancreas)", "UA-MT h5 (LA)",
                "NRRD (LA challenge)", "authors' flat h5", "NIfTI (BTCV image)", "NIfTI (BTCV label)"}
    missing = expected - set(TRIED)
    if missing:
        pytest.skip(f"run with the whole module to check every format ({sorted(missing)} not run here)")
    assert all(TRIED[f] >= EXAMPLES for f in expected), TRIED

