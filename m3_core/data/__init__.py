"""Datasets: nerfstudio / COLMAP readers, the keyframe writer, the precomputed-feature store,
the train/test split and procedural synthetic scenes. Poses are OpenCV camera-to-world."""

from m3_core.data.colmap import read_colmap_dataset
from m3_core.data.dataset import DEFAULT_MAX_SIZE, Frame, SceneDataset, load_dataset
from m3_core.data.features import FeatureStore, list_feature_names, sample_bilinear
from m3_core.data.split import split_indices
from m3_core.data.synthetic import (
    SyntheticObject,
    default_objects,
    make_synthetic_scene,
    read_objects_json,
)
from m3_core.data.transforms import TransformsWriter, read_transforms_dataset

__all__ = [
    "DEFAULT_MAX_SIZE",
    "FeatureStore",
    "Frame",
    "SceneDataset",
    "SyntheticObject",
    "TransformsWriter",
    "default_objects",
    "list_feature_names",
    "load_dataset",
    "make_synthetic_scene",
    "read_colmap_dataset",
    "read_objects_json",
    "read_transforms_dataset",
    "sample_bilinear",
    "split_indices",
]
