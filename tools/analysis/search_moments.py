"""Does search find the moment? Long videos of synthetic scenes, each scene's caption queried.

Writes ``--videos`` videos of ``--segments`` scenes of the synthetic benchmark (12 s each,
all captions distinct; ``projects/tempme_data/long_videos.py``), indexes them with windows
(``tools/search.py index``) and queries every scene's caption. Reports, over all captions:

- ``at_time``: the best moment of the caption's video overlaps the scene (the video found
  at the right time; what a search inside one video returns first);
- ``top1``: the first moment of the whole index is in the caption's video and overlaps
  the scene;
- ``chance_at_time``: ``at_time`` of a random window of the right video.

Example (the demo's trained model, ``make demo``)::

    python tools/analysis/search_moments.py configs/tempme_synthetic.py \
        --checkpoint work_dirs/demo/tempme/epoch_6.pth --out work_dirs/moments_eval
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


def evaluate(config: str, checkpoint: Optional[str], out: str, videos: int = 4,
             segments: int = 5, seed: int = 0, cfg_options: Optional[dict] = None,
             window: Optional[float] = None, stride: Optional[float] = None) -> Dict:
    """Write the videos under ``out``, index them, query each caption; the figures above."""
    # imported here, so that main() imports them with the known warnings hidden
    from projects.tempme.apis.inference import encode_texts, init_retriever, load_config
    from projects.tempme_data.long_videos import write_long_videos
    from projects.tempme_deploy.search import VideoIndex
    from projects.tempme_deploy.search.moments import overlaps
    from tools import search as search_tool
    cfg = load_config(config, cfg_options)
    size = int(cfg.model.clip.arch['vision_cfg']['image_size'])
    start = time.perf_counter()
    entries = write_long_videos(os.path.join(out, 'videos'), seed, videos, segments, size=size)
    index_dir = os.path.join(out, 'index')
    search_tool.build_index(os.path.join(out, 'videos'), index_dir, config, checkpoint,
                            cfg_options, workers=0, rebuild=True, progress=False,
                            window=window, stride=stride)
    index_s = time.perf_counter() - start
    index = VideoIndex.load(index_dir)
    loaded = init_retriever(config, checkpoint, cfg_options=cfg_options)
    captions = [(e['file'], s) for e in entries for s in e['segments']]
    queries = encode_texts(loaded, [s['caption'] for _, s in captions]).float().numpy()
    rankings = index.search_many(queries, [index.num_files] * len(captions), per_video=1)
    spans_of = {}
    for row in range(len(index)):
        moment = index.moment(row, 0.0)
        spans_of.setdefault(moment.path, []).append((moment.start, moment.end))
    at_time, top1, chance, found = [], [], [], []
    for (path, segment), ranking in zip(captions, rankings):
        truth = (segment['start'], segment['end'])
        best = next(m for m in ranking if m.path == path)
        at_time.append(overlaps((best.start, best.end or np.nan), truth))
        top1.append(ranking[0].path == path and overlaps(
            (ranking[0].start, ranking[0].end or np.nan), truth))
        spans = spans_of[path]
        chance.append(sum(overlaps(s, truth) for s in spans) / len(spans))
        found.append(dict(caption=segment['caption'], video=os.path.basename(path),
                          truth=list(truth), found=[best.start, best.end],
                          score=round(best.score, 4), at_time=bool(at_time[-1]),
                          top1=bool(top1[-1])))
    return dict(captions=len(captions), videos=videos, segments=segments,
                windows=len(index), window=index.windows, at_time=float(np.mean(at_time)),
                top1=float(np.mean(top1)), chance_at_time=float(np.mean(chance)),
                index_seconds=round(index_s, 1), checkpoint=checkpoint, results=found)


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='trained checkpoint (e.g. the demo\'s)')
    parser.add_argument('--out', default='work_dirs/moments_eval', help='videos, index, report')
    parser.add_argument('--videos', type=int, default=4)
    parser.add_argument('--segments', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--window', type=float, help='seconds per window (default: the clip)')
    parser.add_argument('--stride', type=float, help='seconds between windows (default: half)')
    args = parser.parse_args(argv)
    from projects.tempme.console import quiet_console
    from projects.tempme.known_warnings import ignore_known_warnings
    with ignore_known_warnings():
        quiet_console()  # mmengine's file-backend notices, logged when a video is opened
        report = evaluate(args.config, args.checkpoint, args.out, args.videos, args.segments,
                          args.seed, window=args.window, stride=args.stride)
    with open(os.path.join(args.out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    n = report['captions']
    print(f'{report["videos"]} videos x {report["segments"]} scenes of 12 s, '
          f'{report["windows"]} windows ({report["window"]}):')
    print(f'  best moment of the right video overlaps the scene: '
          f'{round(report["at_time"] * n)}/{n} ({100 * report["at_time"]:.0f}%; a random window '
          f'of that video: {100 * report["chance_at_time"]:.0f}%)')
    print(f'  first moment of the index is the scene: {round(report["top1"] * n)}/{n} '
          f'({100 * report["top1"]:.0f}%)')
    return report


if __name__ == '__main__':
    main()
