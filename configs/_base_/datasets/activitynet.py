# ActivityNet Captions paragraph-to-video retrieval: each video's sentences sorted by start
# time and joined into one caption; train on train (10,009 videos), evaluate on val_1
# (4,917 videos), which has no separate test split (CLIP4Clip's protocol).
# Layout (tools/data/README.md; tools/data/activitynet/convert_annotations.py writes the json):
#   data/activitynet/videos/v_*.{mp4,mkv,webm}   (or without the v_ prefix)
#   data/activitynet/annotations/activitynet_{train,val1}.json   {video_file: [paragraph]}
# 64 frames and 64 text tokens: CLIP4Clip's paragraph setting (--max_frames 64
# --max_words 64, ArrowLuo/CLIP4Clip README); the model config must use 64 frames too.
_base_ = ['msrvtt_9k_1ka.py']

data_root = 'data/activitynet'
num_frames = 64
context_length = 64

# The MSR-VTT pipelines with this dataset's frame and token counts.
train_pipeline = [
    dict(t, clip_len=num_frames) if t['type'] == 'UniformSample' else
    dict(t, context_length=context_length) if t['type'] == 'OpenCLIPTokenize' else t
    for t in _base_.train_pipeline]
test_pipeline = [
    dict(t, clip_len=num_frames) if t['type'] == 'UniformSample' else
    dict(t, context_length=context_length) if t['type'] == 'OpenCLIPTokenize' else t
    for t in _base_.test_pipeline]

train_dataloader = dict(
    dataset=dict(ann_file='annotations/activitynet_train.json', data_root=data_root,
                 data_prefix=dict(video='videos'), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/activitynet_val1.json', data_root=data_root,
                 data_prefix=dict(video='videos'), pipeline=test_pipeline))
test_dataloader = val_dataloader
