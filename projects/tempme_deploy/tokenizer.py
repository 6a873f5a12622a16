"""CLIP's tokenizer without torch: open_clip's vocabulary and rules on ``tokenizers``.

open_clip's ``SimpleTokenizer`` imports torch and returns tensors, which a query service
should not need. :func:`clip_tokenizer_json` turns its vocabulary and merges into a
``tokenizers`` BPE model (byte-level, ``</w>`` word ends, CLIP's split pattern) at
export time; :class:`ClipTokenizer` applies open_clip's text cleaning (ftfy, HTML
unescaping, whitespace, lower case) and the training pipeline's row layout
(``[SOT, tokens, EOT, 0...]``, a long caption cut with EOT as its last token). The
ids equal ``OpenCLIPTokenize``'s (tested on a caption corpus).
"""
import html
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: open_clip's word split (its special tokens are matched first, as there).
SPLIT_PATTERN = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
                 r"[^\s\p{L}\p{N}]+")
SOT, EOT = '<start_of_text>', '<end_of_text>'
#: Longest token row accepted from an export (CLIP: 77); bounds the memory of a batch.
MAX_CONTEXT_LENGTH = 2048


def is_empty_query(text: Optional[str]) -> bool:
    """Whether a query says nothing: only whitespace, separators, control or format
    characters (NUL, zero-width spaces and joiners, byte-order marks).

    The CLI and the service refuse such a query alike; encoded, it would still give an
    embedding (of byte tokens nobody typed) and a confident-looking ranking.
    """
    return text is None or all(c.isspace() or unicodedata.category(c)[0] in 'CZ'
                               for c in text)


def clip_tokenizer_json(vocab: Dict[str, int], merges: Sequence[Tuple[str, str]]) -> str:
    """A ``tokenizers`` JSON for CLIP's BPE given its vocabulary and ranked merges."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab=dict(vocab), merges=[tuple(m) for m in merges],
                                     end_of_word_suffix='</w>', fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior='removed', invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    # open_clip maps these strings to their ids wherever they appear in a text
    tokenizer.add_special_tokens([SOT, EOT])
    return tokenizer.to_str()


def clean_text(text: str) -> str:
    """open_clip's ``lower`` cleaning: ftfy, HTML entities, one space, lower case."""
    import ftfy
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return ' '.join(text.split()).lower()


class ClipTokenizer:
    """Captions -> int64 (N, context_length) ids, as the training pipeline makes them.

    Args:
        tokenizer_json: the text of :func:`clip_tokenizer_json` (``tokenizer.json`` of an
            export).
        context_length: tokens per row, SOT and EOT included.
    """

    def __init__(self, tokenizer_json: str, context_length: int) -> None:
        from tokenizers import Tokenizer
        if isinstance(context_length, bool) or not isinstance(context_length, int) or \
                not 2 <= context_length <= MAX_CONTEXT_LENGTH:
            raise ValueError(f'context_length must be an integer in [2, {MAX_CONTEXT_LENGTH}] '
                             f'(SOT and EOT included), got {context_length!r}')
        try:
            self._tokenizer = Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise ValueError(f'not a tokenizers JSON ({str(err).splitlines()[0][:200]})') \
                from None
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        missing = [t for t in (SOT, EOT) if t not in vocab]
        if missing:
            raise ValueError(f'the vocabulary has no {" or ".join(missing)} token')
        self.sot, self.eot = vocab[SOT], vocab[EOT]
        # cut_padding finds each row's end by its largest id
        if max(vocab.values()) != self.eot:
            raise ValueError(f'{EOT} (id {self.eot}) is not the largest id of the vocabulary '
                             f'({max(vocab.values())}), as CLIP\'s is')
        self.context_length = context_length

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text, without SOT/EOT."""
        cleaned = [clean_text(t) for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch(cleaned, add_special_tokens=False)]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        rows = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for i, ids in enumerate(self.encode(texts)):
            ids = [self.sot] + ids[:self.context_length - 2] + [self.eot]
            rows[i, :len(ids)] = ids
        return rows


def cut_padding(tokens: np.ndarray) -> np.ndarray:
    """Drop the columns after the last end-of-text token of any row (the largest id).

    CLIP's text tower attends causally and pools at end-of-text, so those padding columns
    cannot change an embedding; a short query then costs a fraction of a full row.
    """
    return tokens[:, :int(tokens.argmax(axis=1).max()) + 1]
