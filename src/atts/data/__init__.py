"""Benchmark problems: the built-in datasets (files in this folder) and user JSON Lines files.

    >>> from atts.data import load_dataset
    >>> load_dataset("math100", limit=2)[0].id
    'math100/test/intermediate_algebra/117.json'
"""

from atts.data.builtin import DatasetInfo, list_datasets
from atts.data.loader import load_dataset
from atts.data.problem import DatasetError, Problem

__all__ = ["DatasetError", "DatasetInfo", "Problem", "list_datasets", "load_dataset"]
