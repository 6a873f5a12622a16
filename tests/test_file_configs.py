"""Configs read from files are data: only plainly registered types reach a registry."""

import pytest
from mmaction.registry import MODELS
from mmengine.config import Config

from projects.tempme.file_configs import (UnsafeFileConfigError, checked_file_config,
                                          registered_names)


def test_a_dotted_type_runs_code_when_built_without_the_check(tmp_path):
    """The hazard the check exists for: mmengine imports and calls unknown dotted names."""
    marker = tmp_path / 'made'
    MODELS.build(dict(type='os.makedirs', name=str(marker)))
    assert marker.is_dir()


def test_a_real_config_passes_unchanged():
    """What an index records of a real config (its model and test pipeline) passes as is;
    the runtime parts it leaves out name their runner and DDP wrapper with a scope."""
    from tools.search import frozen_config
    full = Config.fromfile('configs/tempme_tiny.py')
    cfg = frozen_config(full)
    assert checked_file_config(cfg, 'manifest.json') is cfg
    with pytest.raises(UnsafeFileConfigError, match='model_wrapper_cfg.type'):
        checked_file_config(full.to_dict(), 'manifest.json')
    pipeline = cfg['test_dataloader']['dataset']['pipeline']
    assert checked_file_config(pipeline, 'deploy.json', 'video_pipeline') is pipeline
    assert {'TempMeViT', 'Recognizer3D', 'DecordInit', 'AdamW'} <= registered_names()


@pytest.mark.parametrize('value, key, message', [
    (dict(model=dict(type='os.makedirs', name='x')), 'model.type', 'not a plain registered'),
    (dict(model=dict(type='TempMeRetriever', head=[dict(type='builtins.exec')])),
     'model.head.0.type', 'not a plain registered'),
    (dict(model=dict(type='NoSuchThing')), 'model.type', 'is not registered'),
    (dict(model=dict(type=['list'])), 'model.type', 'not a plain registered'),
    (dict(model=dict(type='TempMeViT', _scope_='os')), 'model._scope_', 'not one of the scopes'),
    (dict(custom_imports=dict(imports=['os'])), 'custom_imports', 'would import modules'),
    (dict(_base_=['evil.py']), '_base_', 'would import modules'),
])
def test_file_configs_naming_code_are_refused(value, key, message, tmp_path):
    marker = tmp_path / 'made'
    with pytest.raises(UnsafeFileConfigError, match=message) as refused:
        checked_file_config(value, '/idx/manifest.json', '')
    assert str(refused.value).startswith(f'/idx/manifest.json: {key}')
    assert '\n' not in str(refused.value)
    assert not marker.exists()


def test_flat_cfg_options_are_checked_by_their_last_key():
    ok = {'model.video_encoder.type': 'TempMeViT', 'model.clip.weights': None}
    assert checked_file_config(ok, 'm.json', 'model.cfg_options', flat=True) is ok
    for options, key in [({'model.type': 'os.system'}, 'model.cfg_options.model.type'),
                         ({'custom_imports.imports': ['os']},
                          'model.cfg_options.custom_imports.imports'),
                         ({'model.head': dict(type='posix.system')},
                          'model.cfg_options.model.head.type')]:
        with pytest.raises(UnsafeFileConfigError, match=f'^m.json: {key}'):
            checked_file_config(options, 'm.json', 'model.cfg_options', flat=True)
