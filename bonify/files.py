"""File access for paths that may be local or URLs (gs://...), without TensorFlow for local ones.

Checking a user's paths must answer in a fraction of a second, so local paths use plain
Python; URLs go through `tf.io.gfile` (which knows gs://), imported only then.
"""

from __future__ import annotations

import glob as _glob
import os


def is_url(path: str) -> bool:
    """True for paths such as gs://bucket/dir, which need TensorFlow's (or Beam's) file I/O."""
    return "://" in path


def join(directory: str, name: str) -> str:
    """`directory/name`; os.path.join for local folders."""
    return f"{directory.rstrip('/')}/{name}" if is_url(directory) else os.path.join(directory, name)


def dirname(path: str) -> str:
    """The folder holding `path` ("." for a bare local file name)."""
    if is_url(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return os.path.dirname(path) or "."


def exists(path: str) -> bool:
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def isdir(path: str) -> bool:
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def isfile(path: str) -> bool:
    if is_url(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)
    return os.path.isfile(path)


def read_bytes(path: str) -> bytes:
    if is_url(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def read_text(path: str) -> str:
    """The UTF-8 text of `path`."""
    return read_bytes(path).decode("utf-8")


def glob_names(directory: str, name_pattern: str) -> list[str]:
    """`directory/<name>` for every file name in `directory` matching `name_pattern`. The
    folder is taken literally (it may hold "[" or "*"); only the file name is a pattern."""
    if is_url(directory):
        import tensorflow as tf

        return tf.io.gfile.glob(f"{directory}/{name_pattern}")
    return [
        f"{directory}/{os.path.basename(match)}"
        for match in _glob.glob(os.path.join(_glob.escape(directory), name_pattern))
    ]


def write_text_atomically(path: str, text: str) -> None:
    """Temp file beside `path`, then rename: a reader sees the old file or the new, never half."""
    temp = path + ".tmp"
    if is_url(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(temp, "w") as handle:
            handle.write(text)
        tf.io.gfile.rename(temp, path, overwrite=True)
        return
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)
