"""Tests for the upstream fixes in projects.tempme.compat."""
import importlib
import importlib.metadata
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import projects.tempme  # noqa: F401  (applies the fixes)
from projects.tempme import checkpoint as ckpt
from projects.tempme import compat
from projects.tempme.engine import TempMeRunner

# ---------------------------------------------------------------------------------------------
# mmaction imports
# ---------------------------------------------------------------------------------------------


def test_import_mmaction_models_after_projects_tempme():
    models = importlib.import_module('mmaction.models')
    assert isinstance(models.Recognizer3D, type)
    assert compat.DRN_PACKAGE in sys.modules


def test_register_all_modules():
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.registry import DefaultScope

    register_all_modules()
    assert DefaultScope.get_current_instance().scope_name == 'mmaction'
    assert isinstance(MODELS.get('Recognizer3D'), type)
    # With transformers installed mmaction registers the real VindLU models, not placeholders.
    assert isinstance(MODELS.get('VindLURetrieval'), type)


def test_apply_fixes_is_idempotent():
    assert compat.apply_fixes() == {'drn': False, 'transformers_vindlu': []}


# ---------------------------------------------------------------------------------------------
# DRN
# ---------------------------------------------------------------------------------------------


def test_drn_stand_in_raises_a_clear_error():
    from mmaction.models.localizers import DRN
    from mmaction.registry import MODELS

    with pytest.raises(ImportError, match='issues/2714'):
        DRN(vocab_size=10)
    with pytest.raises(ImportError, match='DRN is not available'):
        MODELS.build(dict(type='DRN', _scope_='mmaction'))


def _fake_mmaction(root, with_drn, imports_drn=True):
    """An mmaction tree laid out as a source checkout: ``drn/`` has no ``__init__.py``."""
    localizers = root / 'models' / 'localizers'
    localizers.mkdir(parents=True)
    line = 'from .drn.drn import DRN\n' if imports_drn else 'from .bmn import BMN\n'
    (localizers / '__init__.py').write_text(line)
    if with_drn:
        (localizers / 'drn').mkdir()
        (localizers / 'drn' / 'drn.py').write_text('')
    return str(root)


def test_drn_detection(tmp_path):
    assert compat._upstream_drn_missing([_fake_mmaction(tmp_path / 'a', with_drn=False)])
    assert not compat._upstream_drn_missing([_fake_mmaction(tmp_path / 'b', with_drn=True)])
    assert not compat._upstream_drn_missing(
        [_fake_mmaction(tmp_path / 'c', with_drn=False, imports_drn=False)])
    assert not compat._upstream_drn_missing([])
    # The installed wheel has the problem this fix exists for.
    assert compat._upstream_drn_missing(compat._mmaction_dirs())


def test_drn_detection_in_a_source_checkout_imports_nothing(tmp_path, monkeypatch):
    """In an mmaction2 checkout ``drn/`` is a folder without ``__init__.py``: asking the import
    system about it needed ``mmaction.models.localizers`` imported (a KeyError otherwise)."""
    root = tmp_path / 'checkout'
    _fake_mmaction(root / 'mmaction', with_drn=True)
    (root / 'mmaction' / '__init__.py').write_text('')
    monkeypatch.syspath_prepend(str(root))
    for name in [n for n in sys.modules if n == 'mmaction' or n.startswith('mmaction.')]:
        monkeypatch.delitem(sys.modules, name)
    assert compat._mmaction_dirs() == [str(root / 'mmaction')]
    assert not compat._upstream_drn_missing(compat._mmaction_dirs())
    assert 'mmaction.models' not in sys.modules


@pytest.fixture
def no_drn_modules(monkeypatch):
    for name in (compat.DRN_PACKAGE, f'{compat.DRN_PACKAGE}.drn'):
        monkeypatch.delitem(sys.modules, name)


def test_drn_fix_installs_stand_in_when_missing(no_drn_modules):
    assert compat.fix_missing_drn() is True
    module = importlib.import_module(f'{compat.DRN_PACKAGE}.drn')
    assert module.DRN is compat.MissingDRN
    assert compat.fix_missing_drn() is False


def test_drn_fix_skipped_when_real_package_exists(monkeypatch, tmp_path, no_drn_modules):
    root = _fake_mmaction(tmp_path, with_drn=True)
    monkeypatch.setattr(compat, '_mmaction_dirs', lambda: [root])
    assert compat.fix_missing_drn() is False
    assert compat.DRN_PACKAGE not in sys.modules


# ---------------------------------------------------------------------------------------------
# VindLU / transformers
# ---------------------------------------------------------------------------------------------


def test_vindlu_imports_and_uses_provided_helpers():
    vindlu = importlib.import_module('mmaction.models.multimodal.vindlu')
    assert isinstance(vindlu.VindLURetrieval, type)
    from mmaction.models.multimodal.vindlu import modeling_bert
    from transformers import BertConfig, pytorch_utils
    assert modeling_bert.apply_chunking_to_forward is pytorch_utils.apply_chunking_to_forward
    assert modeling_bert.prune_linear_layer is pytorch_utils.prune_linear_layer

    torch.manual_seed(0)
    config = BertConfig(hidden_size=8, num_attention_heads=4, intermediate_size=16,
                        num_hidden_layers=1, vocab_size=10, fusion_layer=1)
    attention = modeling_bert.BertAttention(config)
    query = attention.self.query.weight.detach().clone()
    attention.prune_heads([1])
    attention.prune_heads([1, 3])  # head 1 is already gone; only head 3 is pruned now
    assert attention.pruned_heads == {1, 3}
    assert torch.equal(attention.self.query.weight, query[[0, 1, 4, 5]])
    x = torch.randn(2, 3, 8)
    assert attention(x)[0].shape == (2, 3, 8)

    config.chunk_size_feed_forward = 1
    chunked = modeling_bert.BertLayer(config, 0).eval()
    config.chunk_size_feed_forward = 0
    whole = modeling_bert.BertLayer(config, 0).eval()
    whole.load_state_dict(chunked.state_dict())
    torch.testing.assert_close(chunked(x)[0], whole(x)[0])


def test_find_pruneable_heads_and_indices():
    heads, index = compat._find_pruneable_heads_and_indices([1], 3, 2, set())
    assert heads == {1}
    assert index.tolist() == [0, 1, 4, 5]
    # Heads 0 and 2 of 4 are gone; pruning original head 3 removes the second remaining head.
    heads, index = compat._find_pruneable_heads_and_indices([0, 3], 2, 2, {0, 2})
    assert heads == {3}
    assert index.tolist() == [0, 1]
    assert index.dtype == torch.long


def test_transformers_fix_skipped_when_names_exist():
    modeling_utils = importlib.import_module('transformers.modeling_utils')
    before = {n: getattr(modeling_utils, n) for n in compat.VINDLU_MODELING_UTILS_NAMES}
    assert compat.fix_transformers_for_vindlu() == []
    assert {n: getattr(modeling_utils, n) for n in before} == before


def test_transformers_fix_prefers_transformers_own_helpers(monkeypatch):
    modeling_utils = importlib.import_module('transformers.modeling_utils')
    pytorch_utils = importlib.import_module('transformers.pytorch_utils')
    monkeypatch.delattr(modeling_utils, 'apply_chunking_to_forward')
    monkeypatch.delattr(modeling_utils, 'find_pruneable_heads_and_indices')
    assert compat.fix_transformers_for_vindlu() == [
        'apply_chunking_to_forward', 'find_pruneable_heads_and_indices'
    ]
    assert modeling_utils.apply_chunking_to_forward is pytorch_utils.apply_chunking_to_forward
    assert (modeling_utils.find_pruneable_heads_and_indices
            is compat._find_pruneable_heads_and_indices)


def test_transformers_fix_skipped_without_transformers(monkeypatch):
    modeling_utils = importlib.import_module('transformers.modeling_utils')
    monkeypatch.delattr(modeling_utils, 'apply_chunking_to_forward')
    monkeypatch.setattr(compat, '_module_available', lambda name: name != 'transformers')
    assert compat.fix_transformers_for_vindlu() == []
    assert not hasattr(modeling_utils, 'apply_chunking_to_forward')


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return {'loss': ((out - labels)**2).mean()}
        return out


class ToyDataset(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.tensor(float(i)))


def _toy_runner(work_dir, name, max_iters, runner=Runner, **kwargs):
    return runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        default_scope='mmengine',
        train_dataloader=dict(
            dataset=ToyDataset(),
            batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.2),
            clip_grad=dict(max_norm=1.0)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=1, end=3),
        ],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=100),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        randomness=dict(seed=0),
        log_level='WARNING',
        **kwargs)


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('toy_run')
    _toy_runner(work_dir, f'compat_{work_dir.name}', max_iters=2).train()
    return work_dir / 'iter_2.pth'


def test_runner_checkpoint_needs_the_allow_list(runner_checkpoint):
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(runner_checkpoint))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
    # Importing the plugin registered nothing: torch's default load still refuses it.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(runner_checkpoint)


def test_tempme_runner_resumes_where_mmengine_runner_cannot(runner_checkpoint, tmp_path):
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        _toy_runner(tmp_path / 'plain', 'compat_plain', max_iters=3,
                    load_from=str(runner_checkpoint), resume=True).train()

    runner = _toy_runner(tmp_path / 'tempme', f'compat_resume_{tmp_path.name}', max_iters=3,
                         load_from=str(runner_checkpoint), resume=True, runner=TempMeRunner)
    runner.train()
    assert runner.iter == 3
    # Two losses restored from the checkpoint's message hub plus the one just logged.
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 3
    # The run is over: mmengine's own loaders are back.
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        load_checkpoint(ToyModel(), str(runner_checkpoint))


def test_safe_checkpoint_loading_is_scoped(runner_checkpoint):
    from mmengine.runner import checkpoint as mm_checkpoint
    before = (mm_checkpoint.CheckpointLoader._schemes[''], mm_checkpoint.load_url)
    with ckpt.safe_checkpoint_loading():
        with ckpt.safe_checkpoint_loading():  # nested: the outer block's loaders come back
            pass
        loaded = load_checkpoint(ToyModel(), str(runner_checkpoint))
        assert set(loaded) >= {'meta', 'state_dict'}
        assert mm_checkpoint.load_url is ckpt.safe_load_url
    assert (mm_checkpoint.CheckpointLoader._schemes[''], mm_checkpoint.load_url) == before


def test_safe_load_checkpoint_leaves_the_global_allow_list(runner_checkpoint):
    before = torch.serialization.get_safe_globals()
    checkpoint = ckpt.safe_load_checkpoint(runner_checkpoint)
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert checkpoint['message_hub']['log_scalars']['train/loss'].mean() > 0
    assert sorted(map(repr, torch.serialization.get_safe_globals())) == sorted(
        map(repr, before))
    assert HistoryBuffer not in torch.serialization.get_safe_globals()


def test_a_damaged_tensor_record_is_refused(tmp_path):
    """torch does not check CRCs: a flipped byte inside a tensor would load as a new weight."""
    path = tmp_path / 'model.pth'
    torch.save({'state_dict': {'w': torch.zeros(64)}}, path)
    data = bytearray(path.read_bytes())
    start = bytes(data).index(bytes(torch.zeros(64).numpy().tobytes()))
    data[start + 10] ^= 0x40
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)['state_dict']['w']
    assert changed.abs().sum() > 0  # what a plain load gives
    with pytest.raises(ckpt.CheckpointLoadError, match=r"model.pth.*record .*data/0.*CRC"):
        ckpt.safe_load_checkpoint(path)


def test_resume_reads_the_last_checkpoint_inside_the_work_dir(runner_checkpoint, tmp_path):
    original = runner_checkpoint.parent
    copy = tmp_path / 'copy'
    shutil.copytree(original, copy)
    (copy / 'last_checkpoint').write_text(str(runner_checkpoint))  # the original's path
    assert ckpt.latest_checkpoint(str(copy)) == str(copy / 'iter_2.pth')
    (copy / 'last_checkpoint').write_text('iter_2.pth')
    assert ckpt.latest_checkpoint(str(copy)) == str(copy / 'iter_2.pth')

    runner = _toy_runner(copy, f'compat_copy_{tmp_path.name}', max_iters=3, resume=True,
                         runner=TempMeRunner)
    runner.train()
    assert runner.iter == 3

    for named, error in (('https://example.com/iter_2.pth', 'not URLs'),
                         (str(tmp_path / 'elsewhere' / 'gone.pth'), 'not a file in')):
        (copy / 'last_checkpoint').write_text(named)
        with pytest.raises(ckpt.CheckpointLoadError, match=error):
            ckpt.latest_checkpoint(str(copy))
    outside = tmp_path / 'outside.pth'
    shutil.copy(runner_checkpoint, outside)
    (copy / 'link.pth').symlink_to(outside)
    (copy / 'last_checkpoint').write_text('link.pth')
    with pytest.raises(ckpt.CheckpointLoadError, match='leads outside the work dir'):
        ckpt.latest_checkpoint(str(copy))
    (copy / 'last_checkpoint').unlink()
    assert ckpt.latest_checkpoint(str(copy)) is None


def test_safe_load_checkpoint_reads_numpy1_names(tmp_path):
    path = tmp_path / 'numpy1.pth'
    torch.save({'eta': np.float64(1.5), 'counts': np.arange(3)}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b'numpy._core.multiarray' in data
    # Protocol 2 names globals as text lines: rewrite them as numpy 1.x wrote them.
    path.write_bytes(data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))
    loaded = ckpt.safe_load_checkpoint(path)
    assert loaded['eta'] == 1.5
    assert loaded['counts'].tolist() == [0, 1, 2]


class _WriteMarker:
    """Pickles into a call that creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


class _StealAttribute:
    """Pickles into getattr on an allow-listed class, outside the statistics it may reach."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'register_statistics')


def test_malicious_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _WriteMarker(marker)}, path)

    with pytest.raises(ckpt.UnsafeCheckpointError, match='evil.pth') as refused:
        ckpt.safe_load_checkpoint(path)
    assert isinstance(refused.value, pickle.UnpicklingError)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    assert not marker.exists()

    # Control: the payload is live when unrestricted unpickling is used.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_getattr_stand_in_only_reaches_statistics(tmp_path):
    assert ckpt._history_buffer_statistic(HistoryBuffer, 'mean') is HistoryBuffer.mean
    path = tmp_path / 'getattr.pth'
    torch.save({'meta': _StealAttribute()}, path)
    with pytest.raises(ckpt.CheckpointLoadError, match='register_statistics'):
        ckpt.safe_load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        ckpt._history_buffer_statistic(np.ndarray, 'mean')


def test_safe_load_checkpoint_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth') as missing:
        ckpt.safe_load_checkpoint(tmp_path / 'missing.pth')
    assert isinstance(missing.value, ckpt.CheckpointLoadError)


def test_allow_list_is_explicit():
    names = set()
    for entry in ckpt.SAFE_CHECKPOINT_GLOBALS:
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    assert names == {
        'mmengine.logging.history_buffer.HistoryBuffer',
        'builtins.getattr',
        'numpy.ndarray',
        'numpy.dtype',
        'numpy._core.multiarray._reconstruct',
        'numpy.core.multiarray._reconstruct',
        'numpy._core.multiarray.scalar',
        'numpy.core.multiarray.scalar',
        'numpy.dtypes.Float64DType',
        'numpy.dtypes.Int64DType',
        'numpy.dtypes.Float32DType',
        'numpy.dtypes.Int32DType',
    }
    assert getattr not in ckpt.SAFE_CHECKPOINT_GLOBALS
