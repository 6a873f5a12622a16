# The order-blind baseline for the synthetic benchmark: the same tiny CLIP and recipe as
# tempme_synthetic.py, with no merging and mean pooling over frames (CLIP4Clip meanP).
_base_ = ['tempme_synthetic.py']

model = dict(video_encoder=dict(merge='none'))
