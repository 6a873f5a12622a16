"""Retrieval evaluation: pure ranking functions and the mmengine metric around them."""
from .ranking import dual_softmax, evaluator_conventions, recall_from_ranks, retrieval_metrics
from .retrieval_metric import RetrievalMetric

__all__ = ['RetrievalMetric', 'dual_softmax', 'evaluator_conventions', 'recall_from_ranks',
           'retrieval_metrics']
