# LSMDC 2016 text-to-video retrieval: train on the training clips (101,079), select on
# the val clips (7,408), report on the 1,000 public test clips (CLIP4Clip's protocol).
# Layout (tools/data/README.md; tools/data/lsmdc/convert_annotations.py writes the json):
#   data/lsmdc/videos/<movie>/<clip_id>.avi
#   data/lsmdc/annotations/lsmdc_{train,val,test_1k}.json   {video_file: [caption, ...]}
# 12 frames and 32 text tokens, as MSR-VTT (CLIP4Clip README: --max_frames 12
# --max_words 32), so the MSR-VTT pipelines are inherited unchanged.
_base_ = ['msrvtt_9k_1ka.py']

data_root = 'data/lsmdc'

train_dataloader = dict(
    dataset=dict(ann_file='annotations/lsmdc_train.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/lsmdc_val.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
test_dataloader = dict(
    dataset=dict(ann_file='annotations/lsmdc_test_1k.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
