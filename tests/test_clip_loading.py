"""Offline CLIP loading: every supported weight format, clear errors, no network."""
import copy

import pytest
import torch
from safetensors.torch import save_file

from projects.tempme.models import build_open_clip, read_clip_state_dict
from tests.conftest import TINY_CLIP


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    return build_open_clip(TINY_CLIP).eval()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _torchscript(model, path):
    image, text = torch.zeros(1, 3, 112, 112), torch.zeros(1, 32, dtype=torch.long)
    traced = torch.jit.trace(model, (image, text), check_trace=False, strict=False)
    torch.jit.save(traced, str(path))


def _writers():
    return {
        'openai_torchscript.pt': _torchscript,
        'state_dict.pt': lambda m, p: torch.save(m.state_dict(), p),
        'pytorch_model.bin': lambda m, p: torch.save(m.state_dict(), p),
        'model.safetensors': lambda m, p: save_file(
            {k: v.contiguous() for k, v in m.state_dict().items()}, str(p)),
        'open_clip_epoch_1.pt': lambda m, p: torch.save(
            {'epoch': 1, 'state_dict': {'module.' + k: v for k, v in m.state_dict().items()}},
            p),
    }


@pytest.mark.parametrize('name', list(_writers()))
def test_every_format_loads_the_same_weights(tmp_path, source, name):
    path = tmp_path / name
    _writers()[name](source, path)
    loaded = build_open_clip(TINY_CLIP, weights=str(path))
    assert _same_weights(loaded, source)


def test_openai_torchscript_extra_keys_are_dropped(tmp_path, source):
    # OpenAI's archives also hold these three scalars next to the weights.
    model = copy.deepcopy(source)
    for key in ('input_resolution', 'context_length', 'vocab_size'):
        model.__dict__.pop(key, None)
        model.register_buffer(key, torch.tensor(1))
    path = tmp_path / 'ViT.pt'
    _torchscript(model, path)
    assert 'vocab_size' not in read_clip_state_dict(str(path))
    assert _same_weights(build_open_clip(TINY_CLIP, weights=str(path)), source)


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoints/clip/ViT-B-32.pt'):
        build_open_clip('ViT-B-32', weights=str(tmp_path / 'nope.pt'))


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown CLIP architecture 'ViT-Q-99'"):
        build_open_clip('ViT-Q-99')


def test_weights_of_another_architecture_list_the_mismatch(tmp_path, source):
    path = tmp_path / 'other.pt'
    state = source.state_dict()
    state.pop('ln_final.weight')
    state['extra.weight'] = torch.zeros(1)
    torch.save(state, path)
    expected = r"(?s)missing keys: \['ln_final.weight'\].*unexpected keys: \['extra.weight'\]"
    with pytest.raises(RuntimeError, match=expected):
        build_open_clip(TINY_CLIP, weights=str(path))


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    path = tmp_path / 'evil.pt'
    torch.save({'visual.proj': Exploit()}, path)
    with pytest.raises(RuntimeError, match='evil.pt'):
        build_open_clip(TINY_CLIP, weights=str(path))
    assert not marker.exists()
