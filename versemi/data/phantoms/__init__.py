"""Embedded default data: procedural 3D phantoms written in each dataset's real raw format.

The real datasets cannot be shipped, so ``generate`` writes look-alikes in exactly the layouts
that the real downloads have, so the readers and ``prepare`` run on them unchanged::

    <out>/Pancreas-CT/PANCREAS_0001/<study>/<series>/1-001.dcm ...   DICOM CT series (NIH Pancreas-CT)
    <out>/TCIA_pancreas_labels-02-05-2017/label0001.nii.gz          pancreas label on the DICOM grid
    <out>/Task09_Spleen/{dataset.json,imagesTr,labelsTr,imagesTs}     MSD layout (spleen_2.nii.gz ...)
    <out>/Task06_Lung/{dataset.json,imagesTr,labelsTr,imagesTs}       MSD layout (lung_001.nii.gz ...)
    <out>/LA/2018LA_Seg_Training Set/<ID>/mri_norm2.h5, LA/train.list, LA/test.list   (UA-MT layout)
    <out>/hidden_labels/<dataset>/<case>.nii.gz, hidden_labels/legend.json
    <out>/PHANTOMS.json                                               provenance

Geometry conventions (the contract with the readers):

* Volumes are generated as arrays indexed (x, y, z) = (DICOM column, DICOM row, slice), the
  patient axes being LPS (x to the patient's left, y posterior, z superior), z ascending.
* DICOM: one file per slice, ``InstanceNumber`` 1 is the most superior slice (highest z), as in
  many clinical exports, so a reader must sort by ``ImagePositionPatient`` (not by file name) to
  match the label.  Stored pixels are uint16 = HU + 1024 (``RescaleIntercept`` -1024, slope 1).
  ``PixelSpacing`` = (row spacing, column spacing) = (sy, sx).
* NIfTI (pancreas labels, MSD images/labels, hidden labels of CT cases): the (x, y, z) array with
  the RAS affine of that geometry, ``diag(-sx, -sy, sz)`` and origin ``(-ox, -oy, oz)`` where
  ``(ox, oy, oz)`` is the LPS position of voxel (0, 0, 0); qform and sform code 1.  For the
  pancreas this is exactly the geometry of the sorted DICOM series.
* LA: the h5 arrays are (x, y, z) like UA-MT's, image float32 z-scored over the whole volume
  *before* the x/y crop around the atrium (as UA-MT's script does), label uint8 0/1; the h5
  carries no spacing (as the real files), its hidden label NIfTI has affine ``diag(sx, sy, sz)``.
* Hidden labels hold every structure (codes :data:`~versemi.data.registry.STRUCTURES`); the exposed
  label of each dataset is exactly ``hidden == code`` of its ``DatasetInfo.structure`` (pancreas, spleen, tumour,
  left_atrium).

Every case is drawn from its own generator seeded by ``(seed, task id, crc32(case name))``, so
a case does not depend on the others nor on the profile's case list; the same seed gives
byte-identical files (fixed DICOM UIDs derived from the seed, no timestamps, gzip mtime 0).

Modules: ``geometry`` (grids, random fields, implicit shapes), ``trunk`` (body wall, spine, CT finish),
``abdomen`` / ``thorax`` / ``heart`` (the three phantom builders), ``cases`` (case lists of a profile,
one case drawn), ``writers`` (DICOM, NIfTI, HDF5, MSD json), ``generator`` (:func:`generate`).
"""

from versemi.data.registry import STRUCTURES

from .cases import MIN_TARGET_VOXELS, PhantomCase, build_case, case_ids, phantom_spec
from .generator import GENERATOR, file_digest, generate
from .unseen import UNSEEN_SITES, generate_unseen, unseen_case_ids
from .writers import VERSION, dataset_roots

__all__ = ["STRUCTURES", "MIN_TARGET_VOXELS", "GENERATOR", "VERSION", "PhantomCase", "build_case", "case_ids",
           "dataset_roots", "file_digest", "generate", "phantom_spec", "UNSEEN_SITES", "generate_unseen",
           "unseen_case_ids"]
