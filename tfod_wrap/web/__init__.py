"""The live webcam detection page: a static page on TF.js, served with its model by `tfod-wrap serve`.

`serve`/`make_server`/`serving` run the server (tfod_wrap/web/serve.py); `build_site` writes the page, its model and
TF.js as a static site for any host (tfod_wrap/web/site.py, `export --site`); `make_clip`/`run_page` drive the page
in headless Chromium with a fake camera (tfod_wrap/web/browser.py), for the tests and the page benchmarks.
"""

from tfod_wrap.web.browser import make_clip, run_page
from tfod_wrap.web.serve import camera_note, check_model_dir, make_server, serve, serving
from tfod_wrap.web.site import build_site

__all__ = ["build_site", "camera_note", "check_model_dir", "make_clip", "make_server", "run_page", "serve", "serving"]
