"""Check that our TempMe computes what the published implementation computes.

Reads a reference fixture (format: ``tests/data/README.md``), converts its weights and
arguments into a ``TempMeRetriever``, runs both towers on the fixture's inputs and
compares features and every vision block's output shape. Exits 1 on any mismatch.

Example::

    python tools/analysis/check_reference.py tests/data/reference_tempme_default.pt
"""
import argparse
import sys
import time
from typing import Callable, Dict, List, Optional


def check_fixture(path: str, atol: float = 1e-4,
                  log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Run the comparison; returns differences, shapes and an overall ``ok``.

    ``log`` receives a line before each step (the model build and the towers take from
    seconds to minutes on a busy CPU).
    """
    start = time.perf_counter()

    def step(what: str) -> None:
        if log is not None:
            log(f'[{time.perf_counter() - start:5.1f} s] {what}')

    import torch

    from projects.tempme.models import TempMeRetriever
    from projects.tempme.reference import convert_reference_state_dict, reference_model_config
    step(f'reading {path}')
    fixture = torch.load(path, weights_only=True, map_location='cpu')
    cfg = reference_model_config(fixture['config'])
    cfg.pop('type')
    step('building the model and loading the converted reference weights')
    model = TempMeRetriever(**cfg, data_preprocessor=None).eval()
    model.load_state_dict(
        convert_reference_state_dict(fixture['state_dict'], lora=cfg['lora'] is not None),
        strict=True)
    shapes: List[tuple] = []
    hooks = [b.register_forward_hook(lambda m, i, out: shapes.append(tuple(out[0].shape)))
             for b in model.video_encoder.blocks]
    with torch.no_grad():
        step(f'text tower on {len(fixture["text_ids"])} captions')
        text = model.encode_text(fixture['text_ids'])
        step(f'video tower on {len(fixture["video"])} videos')
        video = model.encode_video(fixture['video'].float())
    step('comparing')
    for hook in hooks:
        hook.remove()
    ref_shapes = [tuple(s) for s in fixture['block_output_shapes']]
    text_diff = (text - fixture['text_feat'].float()).abs().max().item()
    video_diff = (video - fixture['video_feat'].float()).abs().max().item()
    return dict(text_diff=text_diff, video_diff=video_diff, shapes=shapes,
                ref_shapes=ref_shapes,
                ok=text_diff <= atol and video_diff <= atol and shapes == ref_shapes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('fixture', help='reference fixture (.pt)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest absolute feature difference accepted (fp32)')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    args = parser.parse_args()
    from projects.tempme_cli import require_file
    require_file(args.fixture, 'fixture')
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    if log:
        log('importing torch, mmaction2 and the plugin (5-30 s)')
    from projects.tempme.known_warnings import ignore_known_warnings
    with ignore_known_warnings():
        result = check_fixture(args.fixture, args.atol, log)
    print(f'fixture: {args.fixture}')
    print(f'max |text feature difference|:  {result["text_diff"]:.3e}')
    print(f'max |video feature difference|: {result["video_diff"]:.3e}  (atol {args.atol:g})')
    print(f'{"block":>5}  {"ours":>18}  {"reference":>18}')
    for i, (ours, ref) in enumerate(zip(result['shapes'], result['ref_shapes'])):
        mark = '' if ours == ref else '  <-- mismatch'
        print(f'{i:>5}  {str(ours):>18}  {str(ref):>18}{mark}')
    if len(result['shapes']) != len(result['ref_shapes']):
        print(f'block count differs: ours {len(result["shapes"])}, '
              f'reference {len(result["ref_shapes"])}')
    print('MATCH' if result['ok'] else 'MISMATCH')
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    from projects.tempme_cli import run_tool
    sys.exit(run_tool(main))
