"""tfod-wrap: the TensorFlow Object Detection API, from annotations to a detector in the browser.

Importing the package installs the compatibility fixes of `tfod_wrap.compat`, so `object_detection`
imports work afterwards in the same process.
"""

from tfod_wrap import compat

__version__ = "0.1.0"

compat.apply()
