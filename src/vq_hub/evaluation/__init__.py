"""Offline measures of generative quality: a feature network the project trains and ships (`ImageClassifier`), the
metrics computed from its features and logits, and the harness that `vq-hub evaluate`, the training scripts and the
README tables share."""

from .classifier import ImageClassifier, ImageClassifierOutput
from .feature_network import FeatureNetwork, find_feature_network, load_feature_network
from .harness import evaluate_pipeline, evaluate_tokenizer, sample_images, score_images
from .inception import find_inception_weights, inception_fid
from .metrics import class_accuracy, classifier_score, frechet_distance, kernel_distance, precision_recall
from .reference import REFERENCE_STATISTICS, ReferenceStatistics, extract_features

__all__ = [
    "REFERENCE_STATISTICS",
    "FeatureNetwork",
    "ImageClassifier",
    "ImageClassifierOutput",
    "ReferenceStatistics",
    "class_accuracy",
    "classifier_score",
    "evaluate_pipeline",
    "evaluate_tokenizer",
    "extract_features",
    "find_feature_network",
    "find_inception_weights",
    "frechet_distance",
    "inception_fid",
    "kernel_distance",
    "load_feature_network",
    "precision_recall",
    "sample_images",
    "score_images",
]
