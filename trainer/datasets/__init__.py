"""Training sets: built from feedback, enrolment photos and folders, pinned by a manifest.

:func:`build_manifest` scans sources into a versioned :class:`DatasetManifest`;
:func:`store_manifest` / :func:`load_manifest` keep it in the datasets bucket;
:func:`materialize` fetches and verifies its images; :func:`prepare_faces` aligns them.
"""

from trainer.datasets.builder import BuildOptions, build_manifest, load_manifest, store_manifest
from trainer.datasets.faces import FaceSample, FaceSet, PipelineAligner, prepare_faces
from trainer.datasets.manifest import DatasetManifest, ManifestEntry, manifest_key
from trainer.datasets.materialize import LocalEntry, materialize
from trainer.datasets.sources import (
    EnrollmentSource,
    FeedbackSource,
    FolderSource,
    object_store_sources,
)

__all__ = [
    "BuildOptions",
    "DatasetManifest",
    "EnrollmentSource",
    "FaceSample",
    "FaceSet",
    "FeedbackSource",
    "FolderSource",
    "LocalEntry",
    "ManifestEntry",
    "PipelineAligner",
    "build_manifest",
    "load_manifest",
    "manifest_key",
    "materialize",
    "object_store_sources",
    "prepare_faces",
    "store_manifest",
]
