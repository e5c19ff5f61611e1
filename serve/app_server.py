"""The process `bonify-app` becomes: load the model, then run Streamlit's own `streamlit run`.

`python -m serve.app_server run serve/app_page.py --server.port ...` (serve.app builds the
command line; the checked models come in the BONIFY_APP_CONFIG environment variable). The
model is loaded here, before Streamlit opens its port, into the cache the page reads
(`serve.app.loaded_predictor`), so that Streamlit's /_stcore/health - the Kubernetes
readiness probe of the app - answers only once the model is loaded, and a model that will not
load stops the server with one error line instead of failing the first visitor's page.
"""

from __future__ import annotations

import sys

from bonify.cli import run_command
from serve.app import PROG, loaded_predictor, page_config


def _run(argv) -> int:
    loaded = loaded_predictor(page_config())
    print(f"{PROG}: model loaded ({', '.join(loaded.model_files)})", flush=True)
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    return cli.main()


if __name__ == "__main__":
    sys.exit(run_command(PROG, _run, sys.argv[1:]))
