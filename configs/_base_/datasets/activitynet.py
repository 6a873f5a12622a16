# ActivityNet Captions paragraph-to-video retrieval: each video's sentences sorted by start
# time and joined into one caption; train on train (10,009 videos), evaluate on val_1
# (4,917 videos), which has no separate test split (CLIP4Clip's protocol).
# Layout (tools/data/README.md; tools/data/activitynet/convert_annotations.py writes the json):
#   data/activitynet/videos/v_*.{mp4,mkv,webm}   (or without the v_ prefix)
#   data/activitynet/annotations/activitynet_{train,val1}.json   {video_file: [paragraph]}
# Frames, tokens and pipelines as DiDeMo (CLIP4Clip's paragraph setting, 64 / 64).
_base_ = ['didemo.py']

data_root = 'data/activitynet'

train_dataloader = dict(
    dataset=dict(ann_file='annotations/activitynet_train.json', data_root=data_root))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/activitynet_val1.json', data_root=data_root))
test_dataloader = val_dataloader
