"""Makes the RF-DETR pre-processing test data (run from this directory with numpy, pillow and
opencv-python; reads tests/fixtures and, for the first file, the fixtures' full tensor
01_multi_320x320.rfdetr-stretch_320x320.input.npy from reference/dev/tensors of the shared
fixtures, given as the first argument):

- 01_multi_320x320.rfdetr-input.rows0-8.npy: rows 0..8 of every channel ([3, 8, 320] float32)
  of the tensor rfdetr's preprocess_to_nchw made of 01_multi_320x320.jpg (the whole tensor is
  1.2 MB); the image's pixels come from tests/fixtures/reference/dev/tensors/
  01_multi_320x320.letterbox_320x320.input.npy (320x320 needs no letterbox: RGB / 255);
- 01_multi_320x320.rfdetr-shapes-{detect,seg}.{dets,labels}.npy: copied from the shared fixtures'
  tensors/ unchanged (rfdetr's ONNX outputs for that input);
- crop_37x23.rgb.npy: a 37x23 crop of 02_multi_640x480.jpg, and crop_37x23.to_16x29.npy its
  stretch to 16x29 (H x W x 3 float32, 0..1): cv2.resize of the float image, INTER_LINEAR,
  which equals torchvision's bilinear resize without antialias to 1.1e-5
  (tests/fixtures/models/MODELS.md, "The resize, checked against OpenCV")."""
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[5]
IMAGES = REPO / "tests" / "fixtures" / "images" / "dev"
tensors = Path(sys.argv[1])

full = np.load(tensors / "01_multi_320x320.rfdetr-stretch_320x320.input.npy")
np.save("01_multi_320x320.rfdetr-input.rows0-8.npy", np.ascontiguousarray(full[0, :, :8, :]))
for model in ("detect", "seg"):
    for out in ("dets", "labels"):
        shutil.copyfile(tensors / f"01_multi_320x320.rfdetr-shapes-{model}.{out}.npy",
                        f"01_multi_320x320.rfdetr-shapes-{model}.{out}.npy")

crop = np.ascontiguousarray(np.asarray(Image.open(IMAGES / "02_multi_640x480.jpg").convert("RGB"))[200:223, 300:337])
np.save("crop_37x23.rgb.npy", crop)
np.save("crop_37x23.to_16x29.npy", cv2.resize(crop.astype(np.float32) / 255.0, (16, 29), interpolation=cv2.INTER_LINEAR))
