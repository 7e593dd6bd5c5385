"""Readers for the raw formats of the four datasets.

A dataset's cases are listed as :class:`CaseRef` objects (:func:`list_raw_cases` finds the dataset under a
source folder and lists it); ``CaseRef.load()`` reads one into a :class:`RawCase`, named as the authors name
it (``data0001``, ``spleen_02``, ``lung_001``, the 20-character LA ids) and validated: a bad file raises
:class:`~versemi.utils.VersemiError` with one message naming the file and the problem.

Array axis order
----------------
CT volumes (DICOM, NIfTI) are reoriented to nibabel's *closest canonical* orientation (RAS+), so every
CT array has axes ``(x, y, z)`` whose index increases towards the patient's Right (axis 0), Anterior
(axis 1) and Superior (axis 2). The last axis is the slice axis, as in the authors' HDF5 files.
``spacing`` is the voxel size in mm *per array axis* after reorientation.

A DICOM series gets its world geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing
(slices sorted by their position along the slice normal); its NIfTI label must carry the same world
geometry (as the TCIA label files and any NIfTI written from the series do). Both are then reoriented the
same way, so image and label agree voxel by voxel.

LA volumes keep the array order of their files: the UA-MT ``mri_norm2.h5`` arrays (x, y, z; 88 slices last)
and the challenge's NRRD arrays read in pynrrd's default Fortran order (x, y, z). The UA-MT HDF5 files carry
no voxel size: we assume the challenge's **0.625 x 0.625 x 0.625 mm** (from the challenge description,
not from the files). Files in the authors' flat layout carry no voxel size either: we read an attribute
``spacing`` when present (files written by ``versemi prepare``), else assume 1 mm for pancreas (CoraNet
resampled to 1 mm), 0.625 mm for LA, and 1 mm for spleen and lung (the authors' preprocessing of those is
unpublished; an assumption, used only for mm-based reporting).

Layouts (``src`` may hold any of them; see :func:`find_dataset_root`)::

    Pancreas-CT/PANCREAS_0001/<study>/<series>/*.dcm     + TCIA_pancreas_labels-*/label0001.nii.gz
    Pancreas-CT/PANCREAS_0001.nii.gz (or Pancreas-CT/imagesTr/...)   (NIfTI images instead of DICOM)
    Task09_Spleen/, Task06_Lung/                          MSD: dataset.json, imagesTr/, labelsTr/, imagesTs/
    LA/2018LA_Seg_Training Set/<ID>/mri_norm2.h5         UA-MT; or <ID>/lgemri.nrrd + <ID>/laendo.nrrd
    <folder>/<name>.h5                                    the authors' flat layout (task from the name)
    hidden_labels/<dataset>/<case>.nii.gz                 phantoms only: complete label maps (optional)

Modules: ``common`` (RawCase, CaseRef, the checks), ``pancreas``, ``la``, ``msd``, ``flat`` (the authors'
layout), ``discover`` (:func:`find_dataset_root`, :func:`list_raw_cases`, :func:`hidden_dir_for`); ``btcv`` (the
external BTCV test set, not one of the four datasets: :func:`list_btcv`).
"""

from .btcv import BTCV_CODES, BTCV_LEGEND, BtcvCase, find_btcv_root, list_btcv
from .common import CaseRef, RawCase, relative_source
from .discover import find_dataset_root, hidden_dir_for, list_raw_cases
from .flat import FLAT_DEFAULT_SPACING, list_authors_flat
from .la import LA_SPACING, LA_TRAINING_FOLDER, list_la, read_la, read_la_lists
from .msd import MSD_FOLDERS, list_msd, msd_case_name
from .pancreas import KNOWN_DUPLICATES, PANCREAS_FOLDER, list_nih_pancreas

__all__ = ["CaseRef", "RawCase", "relative_source", "find_dataset_root", "hidden_dir_for", "list_raw_cases",
           "FLAT_DEFAULT_SPACING", "list_authors_flat", "LA_SPACING", "LA_TRAINING_FOLDER", "list_la", "read_la",
           "read_la_lists", "MSD_FOLDERS", "list_msd", "msd_case_name", "KNOWN_DUPLICATES", "PANCREAS_FOLDER",
           "list_nih_pancreas", "BTCV_CODES", "BTCV_LEGEND", "BtcvCase", "find_btcv_root", "list_btcv"]
