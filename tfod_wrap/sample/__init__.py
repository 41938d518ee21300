"""A sample Pascal VOC detection dataset built from photos that ship with scikit-image and scikit-learn.

Lets the whole path (tfrecords -> config -> train -> eval -> export -> webcam) run on a fresh machine
with no data and no download. Three classes of real objects are cut out of real photos with fixed masks
(the coordinates in photos.py were read off the photos) and pasted onto crops of other real photos:

    cat      Chelsea's head                      skimage/data/chelsea.png   (CC0)
    cup      the espresso cup on its saucer      skimage/data/coffee.png    (CC0)
    rocket   the Falcon 9 on its pad             skimage/data/rocket.jpg    (public domain, SpaceX)
             the shuttle stack model             skimage/data/astronaut.png (public domain, NASA)

Each image gets 1-3 objects (about 5% get none) with random scale, rotation (+-20 degrees), flip,
lighting, blur, shadows, partial occlusion and distractors (a dahlia, coins, a face,
a helmet, a badge, a pagoda roof) that belong to no class.

Boxes are exact: the tight box of the transformed mask (alpha >= 0.5), in pixel-edge coordinates
(0 <= xmin < xmax <= width). Occlusion does not shrink a box (the box is the object's full extent, as
in Pascal VOC); the image border does (the box is clipped to it, and the object is marked truncated).
Objects are placed so that at least 40% of each stays visible; placements that would hide more are
redrawn, so no object is left in an image unlabelled.

Deterministic: image i depends only on (seed, i), so the same seed gives byte-identical files whatever
the number of worker processes, on CPUs of the same kind: OpenCV's float kernels can round a few pixels
differently with and without AVX-512 (the annotations stay the same; tests/test_sample_data.py keeps both).

    tfod-wrap sample --output data/sample [--count 300] [--seed 0] [--size 320x240] [--preview FILE]
    python tools/sample_data.py ...   (the same command)

Modules: photos (the photos and the cut-outs' masks), drawing (placing, lighting and pasting), scene (one
image), dataset (the folder on disk: `generate`).
"""

from tfod_wrap.sample.dataset import KIND, MARKER, generate
from tfod_wrap.sample.scene import render

__all__ = ["KIND", "MARKER", "generate", "render"]
