# DiDeMo paragraph-to-video retrieval: each video's descriptions joined in time order into
# one caption; train on train, select on val, report on test (CLIP4Clip's protocol).
# Layout (tools/data/README.md; tools/data/didemo/convert_annotations.py writes the json):
#   data/didemo/videos/*.{mp4,mov,avi,3gp,...}
#   data/didemo/annotations/didemo_{train,val,test}.json   {video_file: [paragraph]}
# 64 frames and 64 text tokens: CLIP4Clip's paragraph setting (--max_frames 64
# --max_words 64, ArrowLuo/CLIP4Clip README); the model config must use 64 frames too.
_base_ = ['msrvtt_9k_1ka.py']

data_root = 'data/didemo'
num_frames = 64
context_length = 64

# The MSR-VTT pipelines with this dataset's frame and token counts (the reference's
# 1 fps grid rule, thinned to 64 frames).
train_pipeline = [
    dict(t, clip_len=num_frames) if t['type'] == 'FpsGridSample' else
    dict(t, context_length=context_length) if t['type'] == 'OpenCLIPTokenize' else t
    for t in _base_.train_pipeline]
test_pipeline = [
    dict(t, clip_len=num_frames) if t['type'] == 'FpsGridSample' else
    dict(t, context_length=context_length) if t['type'] == 'OpenCLIPTokenize' else t
    for t in _base_.test_pipeline]

train_dataloader = dict(
    dataset=dict(ann_file='annotations/didemo_train.json', data_root=data_root,
                 data_prefix=dict(video='videos'), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/didemo_val.json', data_root=data_root,
                 data_prefix=dict(video='videos'), pipeline=test_pipeline))
test_dataloader = dict(
    dataset=dict(ann_file='annotations/didemo_test.json', data_root=data_root,
                 data_prefix=dict(video='videos'), pipeline=test_pipeline))
