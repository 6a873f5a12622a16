"""Offline CLIP loading: every supported weight format, clear errors, no network."""
import copy
from typing import Tuple

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


def test_torchscript_is_read_without_running_its_code(tmp_path, source):
    """A scripted __setstate__ that creates a file runs under torch.jit.load, never here."""
    marker = tmp_path / 'written_by_the_archive'

    class Payload(torch.nn.Module):
        def __init__(self, target: str):
            super().__init__()
            self.weight = torch.ones(2)
            self.target = target

        def forward(self, x):
            return x * self.weight

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training, self.target)

        @torch.jit.export
        def __setstate__(self, state: Tuple[torch.Tensor, bool, str]):
            # the file's zeros are added, so scripting cannot drop the call
            self.weight = state[0] + torch.from_file(state[2], shared=True, size=2)
            self.training = state[1]
            self.target = state[2]

    path = tmp_path / 'payload.pt'
    torch.jit.save(torch.jit.script(Payload(str(marker))), str(path))
    assert not marker.exists()
    torch.jit.load(str(path))  # the proof that the archive carries a working payload
    assert marker.exists()
    marker.unlink()
    with pytest.raises(RuntimeError, match='payload.pt'):
        build_open_clip(TINY_CLIP, weights=str(path))
    assert not marker.exists()


def test_torchscript_archive_asking_for_other_code_is_refused(tmp_path, source):
    path = tmp_path / 'ViT.pt'
    _torchscript(source, path)
    # rewrite data.pkl so that it asks for os.system
    import zipfile
    evil = tmp_path / 'evil.pt'
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, 'w') as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith('/data.pkl'):
                data = data.replace(b'ctorch._utils\n_rebuild_tensor_v2\n', b'cposix\nsystem\n', 1)
            dst.writestr(item, data)
    with pytest.raises(RuntimeError, match=r'evil.pt: the archive asks for posix.system'):
        read_clip_state_dict(str(evil))


def test_torchscript_attributes_that_are_not_weights_are_left_out(tmp_path, source):
    # OpenAI's archives keep e.g. attention masks as plain tensor attributes
    model = copy.deepcopy(source)
    model.transformer.extra_mask = torch.zeros(3)
    path = tmp_path / 'ViT.pt'
    _torchscript(model, path)
    state = read_clip_state_dict(str(path))
    assert 'transformer.extra_mask' not in state
    assert _same_weights(build_open_clip(TINY_CLIP, weights=str(path)), source)
