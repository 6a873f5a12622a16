"""Export a trained retriever for deployment: ONNX graphs checked in ONNX Runtime."""
from .embedders import TextEmbedder, VideoEmbedder, deployable_model
from .onnx_export import ExportParityError, export_onnx, quantize_export
from .parity import merge_margins

__all__ = ['TextEmbedder', 'VideoEmbedder', 'deployable_model', 'ExportParityError',
           'export_onnx', 'merge_margins', 'quantize_export']
