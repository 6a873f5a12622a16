"""Models: CLIP loading, the TempMe video encoder, heads and the retriever."""
from .clip_loading import build_open_clip, load_clip_weights, read_clip_state_dict
from .data_preprocessor import RetrievalDataPreprocessor
from .heads import MeanCLSHead
from .lora import inject_lora, merge_lora
from .retriever import TempMeRetriever
from .tempme_vit import TempMeBlock, TempMeViT
from .text_encoder import CLIPTextEncoder

__all__ = [
    'build_open_clip', 'load_clip_weights', 'read_clip_state_dict', 'RetrievalDataPreprocessor',
    'MeanCLSHead', 'inject_lora', 'merge_lora', 'TempMeRetriever', 'TempMeBlock', 'TempMeViT',
    'CLIPTextEncoder'
]
