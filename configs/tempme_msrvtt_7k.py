# TempMe on MSR-VTT trained on the 7k split (MSRVTT_train.7k.csv of CLIP4Clip's release),
# tested on 1k-A; everything else as tempme_msrvtt.py.
# Expects data/msrvtt/annotations/msrvtt_train_7k.json (tools/data/msrvtt/convert_annotations.py).
_base_ = ['tempme_msrvtt.py']

train_dataloader = dict(dataset=dict(ann_file='annotations/msrvtt_train_7k.json'))
