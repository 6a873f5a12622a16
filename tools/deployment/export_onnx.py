"""Export a trained TempMe retriever to ONNX, checked in ONNX Runtime.

Example::

    python tools/deployment/export_onnx.py configs/tempme_msrvtt.py \
        --checkpoint work_dirs/tempme_msrvtt/best.pth --out work_dirs/tempme_onnx

Writes ``video_encoder.onnx`` (uint8 frames -> embedding, batch dynamic), ``text_encoder.onnx``
(tokens -> embedding), ``tokenizer.json`` and ``deploy.json`` into ``--out``, after
comparing both graphs with PyTorch on random inputs; a mismatch exits non-zero and
leaves ``--out`` as it was. ``--int8`` then quantizes both graphs (dynamic int8 matrix
products), checked by embedding cosine; ``--int8 --from EXPORT`` quantizes an existing
float32 export of the same model instead of exporting again. Serve the result with
``tools/deployment/serve_search.py``.
"""
import argparse
import sys
import time

from mmengine.config import DictAction  # no torch: --help and argument errors answer at once


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config')
    parser.add_argument('--checkpoint', help='trained checkpoint (whole or adapter-only); '
                        'default: the configured CLIP weights')
    parser.add_argument('--out', required=True, help='export folder')
    parser.add_argument('--check-batch', type=int, default=8,
                        help='random videos compared with PyTorch')
    parser.add_argument('--int8', action='store_true',
                        help='quantize both graphs to int8 after their float32 check (about '
                        '2x faster on CPUs with int8 instructions; checked by embedding '
                        'cosine, README "Deploy")')
    parser.add_argument('--from', dest='from_export', metavar='EXPORT',
                        help='with --int8: quantize this float32 export of the same model '
                        'instead of exporting again (the slow part; its model fingerprint must '
                        'match)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if args.from_export and not args.int8:
        parser.error('--from quantizes an export: give --int8 too')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from projects.tempme_cli import UserError, require_file
    if args.check_batch < 1:
        raise UserError(f'--check-batch must be >= 1, got {args.check_batch}')
    if args.from_export:
        require_file(f'{args.from_export}/deploy.json', '--from export')
    require_file(args.config, 'config file')
    if args.checkpoint and '://' not in args.checkpoint:
        require_file(args.checkpoint, 'checkpoint')
    start = time.perf_counter()

    def log(line: str) -> None:
        print(f'[{time.perf_counter() - start:5.0f} s] {line}', flush=True)

    log('importing torch, mmaction2 and the plugin')
    from projects.tempme.console import QUANTIZATION_ADVICE, drop_root_messages
    from projects.tempme.known_warnings import ignore_known_warnings
    with ignore_known_warnings(), drop_root_messages(QUANTIZATION_ADVICE):
        return export(args, log)


def export(args: argparse.Namespace, log) -> dict:
    """Build the model, export and check it; print the parity figures."""
    from projects.tempme.apis.inference import init_retriever
    from projects.tempme.config_checks import check_data_fits_model
    from projects.tempme.deployment import export_onnx, quantize_export
    from projects.tempme_cli import UserError
    log(f'building the model of {args.config}'
        + (f' with {args.checkpoint}' if args.checkpoint else ''))
    try:
        loaded = init_retriever(args.config, args.checkpoint, cfg_options=args.cfg_options)
    except (KeyError, TypeError, ValueError) as err:  # the model is built from the config
        raise UserError(f'{args.config}: {type(err).__name__}: {err}') from err
    check_data_fits_model(loaded.cfg)
    start = time.perf_counter()
    if args.from_export:
        try:
            info = quantize_export(loaded, args.from_export, args.out,
                                   check_batch=args.check_batch, log=log)
        except ValueError as err:  # another model's or an int8 export
            raise UserError(f'--from {err}') from err
        print(f'quantized {args.from_export} into {args.out} in '
              f'{time.perf_counter() - start:.0f} s')
        return _print_int8(info)
    info = export_onnx(loaded, args.out, check_batch=args.check_batch, int8=args.int8, log=log)
    video, text = info['parity']['video'], info['parity']['text']
    print(f'exported to {args.out} in {time.perf_counter() - start:.0f} s; ONNX Runtime vs '
          f'PyTorch: video max abs diff {video["max_abs_diff"]:.2e} (min cosine '
          f'{video["min_cosine"]:.6f}, {len(video["flips"])} merge flips within float noise), '
          f'text max abs diff {text["max_abs_diff"]:.2e}')
    for flip in video['flips']:
        print(f'  video {flip["video"]}: {flip["at"]}; cosine {flip["cosine"]:.6f}')
    return _print_int8(info) if args.int8 else info


def _print_int8(info: dict) -> dict:
    int8 = info['parity']['int8']
    print(f'int8 graphs written; embedding cosine to PyTorch: video >= '
          f'{int8["video_min_cosine"]:.6f}, text >= {int8["text_min_cosine"]:.6f} '
          f'(required: {int8["min_cosine"]})')
    return info


def _main() -> None:
    from projects.tempme_cli import run_tool
    try:
        run_tool(main)
    except RuntimeError as err:
        from projects.tempme.deployment import ExportParityError
        if not isinstance(err, ExportParityError):
            raise
        sys.exit(f'error: {err}')  # the check failed: exit 1, --out untouched


if __name__ == '__main__':
    _main()
