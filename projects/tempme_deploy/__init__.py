"""What a deployed TempMe runs on: no torch, mmengine, mmaction2 or peft.

The video index and exact search (:mod:`.search`), atomic file writes, the CLIP
tokenizer on ``tokenizers`` (:mod:`.tokenizer`), the exported encoders in ONNX Runtime
(:mod:`.onnx_retriever`) and the HTTP search service (:mod:`.service`). Importing this
package imports nothing heavy; the training package :mod:`projects.tempme` builds on it.
"""
