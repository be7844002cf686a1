"""The filesystem a URI lives on (fsspec), with an error that says what is missing."""

from __future__ import annotations

from typing import Any

import fsspec


class StorageDriverError(Exception):
    """No fsspec driver for the URI's scheme: the spec cannot run in this image."""


def filesystem(uri: str, field: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for `uri`, the value of spec field `field`."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as error:  # fsspec knows the scheme; its driver is not installed
        raise StorageDriverError(
            f"{field}: cannot open {uri}: {error} (the batchpredict image has s3fs and gcsfs; "
            "other stores need their fsspec driver in a custom worker image)"
        ) from None
    except ValueError as error:  # "Protocol not known: ..."
        raise StorageDriverError(
            f"{field}: cannot open {uri}: {error}; use a path on a mounted volume, s3://, "
            "gs://, or http(s)://"
        ) from None
    return fs, str(path)
