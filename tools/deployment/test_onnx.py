"""Evaluate ONNX exports on a config's test split: what ``tools/test.py`` reports, in ONNX
Runtime.

Example::

    python tools/deployment/test_onnx.py configs/tempme_msrvtt.py \
        work_dirs/tempme_onnx work_dirs/tempme_onnx_int8 --out work_dirs/onnx_metrics.json

Each video of the split is decoded once with the exports' test pipeline (they must
record the same one) and encoded by every export; captions are tokenised by each
export's own tokenizer. The metrics are ``tools/test.py``'s (t2v / v2t R@1/5/10, MdR,
MnR, R-Sum on cosine similarities, no DSL), so a float32 export should reproduce the
PyTorch numbers of the same checkpoint, and an int8 export shows what quantization costs.
With several exports, the embedding cosine of each to the first is reported too.
"""
import argparse
import json
import os.path as osp
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from mmaction.registry import DATASETS
from mmengine.config import Config, DictAction
from tqdm import tqdm

import projects.tempme  # noqa: F401  (compatibility fixes + registration)
from projects.tempme.apis.inference import export_video_reader
from projects.tempme.console import quiet_console
from projects.tempme.deployment.parity import row_cosines
from projects.tempme.evaluation.ranking import evaluator_conventions, retrieval_metrics
from projects.tempme.evaluation.retrieval_metric import format_metrics
from projects.tempme.known_warnings import ignore_known_warnings
from projects.tempme_deploy.fileio import atomic_write
from projects.tempme_deploy.onnx_retriever import OnnxRetriever


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config whose dataset is evaluated')
    parser.add_argument('exports', nargs='+', help='ONNX export folders (export_onnx.py)')
    parser.add_argument('--split', choices=('test', 'val'), default='test',
                        help='which dataloader\'s dataset (default: test)')
    parser.add_argument('--batch', type=int, default=8, help='videos encoded at once')
    parser.add_argument('--out', help='save the metrics of every export as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.dataset.data_root=DIR')
    return parser.parse_args(argv)


def _cosines(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    cos = row_cosines(a, b)
    return dict(min=float(cos.min()), mean=float(cos.mean()))


def evaluate(cfg: Config, exports: List[str], split: str = 'test', batch: int = 8,
             progress: bool = True) -> Dict[str, Dict]:
    """``{export folder: {metrics, precision, [cosine to the first export]}}``."""
    if batch < 1:
        raise ValueError(f'--batch must be >= 1, got {batch}')
    retrievers = [OnnxRetriever(folder) for folder in exports]
    pipelines = {json.dumps(r.info['video_pipeline'], sort_keys=True) for r in retrievers}
    if len(pipelines) > 1:
        raise ValueError('the exports record different test pipelines; evaluate them apart')
    reader = export_video_reader(retrievers[0].info, exports[0])
    loader = cfg.get(f'{split}_dataloader') or {}
    if not loader.get('dataset'):
        raise KeyError(f'the config has no {split}_dataloader.dataset')
    dataset = DATASETS.build(dict(loader['dataset'], test_mode=True))
    files = [dataset.get_data_info(i)['filename'] for i in range(len(dataset))]

    video_embeddings: List[List[np.ndarray]] = [[] for _ in retrievers]
    for start in tqdm(range(0, len(files), batch), desc='videos', unit='batch',
                      disable=not progress, file=sys.stderr):
        frames = np.stack([reader(path).numpy() for path in files[start:start + batch]])
        for kept, retriever in zip(video_embeddings, retrievers):
            kept.append(retriever.encode_videos(frames))
    captions = dataset.captions
    report, first = {}, None
    for folder, retriever, kept in zip(exports, retrievers, video_embeddings):
        videos = np.concatenate(kept)
        texts = np.concatenate([retriever.encode_texts(captions[j:j + 256])
                                for j in range(0, len(captions), 256)])
        sim = torch.from_numpy(texts) @ torch.from_numpy(videos).T
        entry = dict(precision=retriever.precision,
                     metrics=retrieval_metrics(sim, dataset.caption_to_video,
                                               **evaluator_conventions(
                                                   cfg.get(f'{split}_evaluator'))),
                     num_videos=len(files), num_captions=len(captions))
        if first is None:
            first = videos, texts
        else:
            entry['cosine_to_first'] = dict(video=_cosines(videos, first[0]),
                                            text=_cosines(texts, first[1]))
        report[folder] = entry
    return report


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict]:
    args = parse_args(argv)
    quiet_console()  # mmengine's file-backend notices, logged when a video is opened
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    report = evaluate(cfg, args.exports, args.split, args.batch)
    for folder, entry in report.items():
        print(f'{folder} ({entry["precision"]}, {entry["num_videos"]} videos, '
              f'{entry["num_captions"]} captions): {format_metrics(entry["metrics"])}')
        if 'cosine_to_first' in entry:
            cos = entry['cosine_to_first']
            print(f'  embedding cosine to {args.exports[0]}: videos min '
                  f'{cos["video"]["min"]:.6f} (mean {cos["video"]["mean"]:.6f}), captions '
                  f'min {cos["text"]["min"]:.6f} (mean {cos["text"]["mean"]:.6f})')
    if args.out:
        text = json.dumps(dict(config=args.config, split=args.split, exports=report), indent=1)
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        print(f'written: {osp.abspath(args.out)}')
    return report


if __name__ == '__main__':
    with ignore_known_warnings():
        try:
            main()
        except (FileNotFoundError, KeyError, ValueError) as err:
            sys.exit(f'error: {err}')
