"""The torch-fidelity feature-extractor interface for the cheap test feature spaces (subclasses set DIM and
forward)."""
from __future__ import annotations

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase


class FakeExtractor(FeatureExtractorBase):
    DIM = "0"

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @classmethod
    def get_provided_features_list(cls):
        return (cls.DIM,)

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        return cls.DIM

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
