"""Data: datasets and loaders, splits, per-modality pipelines and standard preprocessors."""

from modelfusion.data.builtin import BUILTIN_DATASETS
from modelfusion.data.dataset import Dataset
from modelfusion.data.datasets import load_dataset
from modelfusion.data.pipeline import DataPipeline
from modelfusion.data.preprocessing import (
    build_preprocessor,
    image_preprocessor,
    reshape_preprocessor,
    text_preprocessor,
)
from modelfusion.data.splits import split_dataset
from modelfusion.errors import DataError, DataFileNotFoundError

__all__ = [
    "BUILTIN_DATASETS",
    "DataError",
    "DataFileNotFoundError",
    "DataPipeline",
    "Dataset",
    "build_preprocessor",
    "image_preprocessor",
    "load_dataset",
    "reshape_preprocessor",
    "split_dataset",
    "text_preprocessor",
]
