"""The installed stack: one OpenCV, able to write and read mp4."""
from importlib.metadata import version

import cv2
import numpy as np


def test_opencv_distributions_agree():
    assert version('opencv-python') == version('opencv-contrib-python')
    assert cv2.__version__ == version('opencv-python').rsplit('.', 1)[0]


def test_cv2_writes_and_reads_mp4(tmp_path):
    path = str(tmp_path / 'clip.mp4')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (64, 32))
    for i in range(8):
        writer.write(np.full((32, 64, 3), 30 * i, np.uint8))
    writer.release()
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 8 and frames[0].shape == (32, 64, 3)
    assert abs(int(frames[5].mean()) - 150) <= 3
