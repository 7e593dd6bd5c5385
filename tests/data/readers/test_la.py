"""Left Atrium reader: UA-MT ``mri_norm2.h5`` and the challenge's NRRD files, ``train.list`` / ``test.list``."""

import h5py
import numpy as np
import pytest

from versemi.data import readers as R
from versemi.utils import VersemiError

from .. import factories as F


def test_la_h5_and_nrrd_and_discovery(tmp_path):
    arrays = F.write_la_h5(tmp_path / "LA", ["ID_A", "ID_B"], train_list=["ID_A"], test_list=["ID_B"])
    for src in (tmp_path, tmp_path / "LA", tmp_path / "LA" / "2018LA_Seg_Training Set"):
        assert R.find_dataset_root(src, "la") == tmp_path / "LA"
    cases = F.load_all(tmp_path, "la")
    assert [c.name for c in cases] == ["ID_A", "ID_B"]
    np.testing.assert_array_equal(cases[0].image, arrays["ID_A"][0])
    assert cases[0].spacing == R.LA_SPACING and cases[0].preprocessed and cases[0].affine is None
    assert R.read_la_lists(tmp_path / "LA") == {"train": ["ID_A"], "test": ["ID_B"]}
    img, lab = F.write_la_nrrd(tmp_path / "chal" / "2018LA_Seg_Training Set", "ID_C")
    (c,) = list(R.read_la(tmp_path / "chal"))
    np.testing.assert_array_equal(c.image, img.astype(np.float32))
    np.testing.assert_array_equal(c.label, (lab == 255).astype(np.uint8))
    assert c.spacing == pytest.approx((0.625, 0.625, 2.5)) and not c.preprocessed
    (same,) = F.load_all(tmp_path / "chal", "la")
    np.testing.assert_array_equal(same.image, c.image)


def test_bad_la_h5_without_label_and_nrrd_without_label(tmp_path):
    p = tmp_path / "LA" / "2018LA_Seg_Training Set" / "ID_X" / "mri_norm2.h5"
    p.parent.mkdir(parents=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=np.zeros((4, 4, 4), np.float32))
    with pytest.raises(VersemiError, match=F.m("ID_X/mri_norm2.h5", "no dataset 'label'", "missing label")):
        list(R.read_la(tmp_path / "LA"))
    F.write_la_nrrd(tmp_path / "chal", "ID_Y", write_label=False)
    with pytest.raises(VersemiError, match=F.m("ID_Y/laendo.nrrd", "missing label")):
        list(R.read_la(tmp_path / "chal"))


# ------------------------------------------------------------------------------------------- real LA

def test_real_la_discovery_and_one_case(la_real_dir):
    assert R.find_dataset_root(la_real_dir.parent, "la") == la_real_dir
    assert R.find_dataset_root(la_real_dir, "la") == la_real_dir
    refs = R.list_la(la_real_dir)
    # follow the folder: every case directory holding the h5 file (the shared copy grew from 60 to 100)
    on_disk = sorted(p.parent.name for p in (la_real_dir / R.LA_TRAINING_FOLDER).glob("*/mri_norm2.h5"))
    assert [r.name for r in refs] == on_disk and len(refs) >= 1
    case = refs[0].load()
    assert case.image.ndim == 3 and case.image.shape[2] == 88 and case.label.dtype == np.uint8
    assert set(np.unique(case.label).tolist()) == {0, 1}
    lists = R.read_la_lists(la_real_dir)
    listed = {k: [ln.strip() for ln in (la_real_dir / f"{k}.list").read_text().splitlines() if ln.strip()]
              for k in ("train", "test")}
    assert [len(lists["train"]), len(lists["test"])] == [len(listed["train"]), len(listed["test"])]
    assert set(lists["train"]).isdisjoint(lists["test"]) and set(lists["train"]) | set(lists["test"]) <= set(on_disk)
