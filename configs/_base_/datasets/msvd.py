# MSVD text-to-video retrieval: the standard split of 1,200 train / 100 val / 670 test
# videos, every caption of a video used (about 40 per video; CLIP4Clip's protocol).
# Layout (tools/data/README.md; tools/data/msvd/convert_annotations.py writes the json):
#   data/msvd/videos/*.avi   (YouTubeClips)
#   data/msvd/annotations/msvd_{train,val,test}.json   {video_file: [caption, ...]}
# 12 frames and 32 text tokens, as MSR-VTT (CLIP4Clip README: --max_frames 12
# --max_words 32), so the MSR-VTT pipelines are inherited unchanged.
_base_ = ['msrvtt_9k_1ka.py']

data_root = 'data/msvd'

train_dataloader = dict(
    dataset=dict(ann_file='annotations/msvd_train.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/msvd_val.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
test_dataloader = dict(
    dataset=dict(ann_file='annotations/msvd_test.json', data_root=data_root,
                 data_prefix=dict(video='videos')))
