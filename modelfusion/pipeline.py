"""The tutorial's ``modelfusion.pipeline``: :class:`~modelfusion.data.DataPipeline`, re-exported.

Examples
--------
>>> from modelfusion.pipeline import DataPipeline
>>> pipeline = DataPipeline().add_stage("image", preprocess_image).add_stage("text", preprocess_text)
>>> pipeline({"image": img, "text": "a photo of a cat"})
"""

from modelfusion.data.dataset import Dataset
from modelfusion.data.pipeline import DataPipeline, Stage

__all__ = ["DataPipeline", "Dataset", "Stage"]
