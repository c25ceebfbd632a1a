"""Image files without decoding them: their header (format and size) and whether they end.

A dataset check must look at every image in seconds, so it never decodes one: it reads
the header (Pillow's ``Image.open`` parses the header only; ``cv2.imread`` would decode
the whole image) and the file's last bytes.

- Unreadable: a file that is missing, empty, of an unknown format or with a broken
  header fails :func:`read_image_header`.
- Truncated: a JPEG must hold its end-of-image marker (FF D9) within its last
  :data:`TAIL_BYTES` bytes, a PNG its ``IEND`` chunk. A decoder meeting a truncated JPEG
  only warns and fills the missing rows with grey, so a cut-off download would otherwise
  train silently; :func:`truncation_problem` catches it without decoding.

Sizes are the stored pixel grid: EXIF orientation is ignored here, as it is by
:func:`wsol.data.dataset.read_image_rgb` and by the annotations of every supported
dataset (their boxes and masks refer to the stored pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_END = b"\xff\xd9"
PNG_END = b"IEND"
HEAD_BYTES = 16
TAIL_BYTES = 4096


class ImageFileError(ValueError):
    """An image file is missing, unreadable or truncated; the message says which and why."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says: its format (Pillow's name, e.g. 'JPEG') and size."""

    format: str
    width: int
    height: int


def truncation_problem(head: bytes, tail: bytes) -> str | None:
    """Why a file with these first and last bytes is truncated, or None if it ends properly.

    Only JPEG and PNG can be judged (other formats give None): a JPEG needs FF D9 in its
    last bytes, a PNG its IEND chunk.
    """
    if head.startswith(JPEG_MAGIC) and JPEG_END not in tail:
        return f"truncated JPEG: no end-of-image marker (FF D9) in its last {len(tail)} bytes"
    if head.startswith(PNG_MAGIC) and PNG_END not in tail:
        return "truncated PNG: no IEND chunk at its end"
    return None


def _head_and_tail(handle, size: int) -> tuple[bytes, bytes]:
    handle.seek(0)
    head = handle.read(HEAD_BYTES)
    handle.seek(max(0, size - TAIL_BYTES))
    return head, handle.read(TAIL_BYTES)


def file_truncation_problem(path: Path) -> str | None:
    """:func:`truncation_problem` of the file at ``path`` (reads 16 + 4096 bytes of it)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        head, tail = _head_and_tail(handle, size)
    return truncation_problem(head, tail)


def read_image_header(path: Path) -> ImageHeader:
    """The format and size of the image at ``path``, reading its header and last bytes only.

    Raises ImageFileError (message without the path; callers name the file) when the file
    is missing, empty, not an image Pillow knows, has a broken header, or is truncated.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            if size == 0:
                raise ImageFileError("empty file")
            head, tail = _head_and_tail(handle, size)
            problem = truncation_problem(head, tail)
            if problem is not None:
                raise ImageFileError(problem)
            handle.seek(0)
            try:
                with Image.open(handle) as image:
                    width, height = image.size
                    image_format = image.format or "unknown"
            except UnidentifiedImageError:
                raise ImageFileError(
                    f"not an image (starts with {head[:8].hex(' ')}); expected a JPEG or PNG"
                ) from None
            except (OSError, SyntaxError, ValueError) as error:
                raise ImageFileError(f"broken image header: {error}") from None
    except FileNotFoundError:
        raise ImageFileError("file not found") from None
    except IsADirectoryError:
        raise ImageFileError("is a folder, not an image file") from None
    except PermissionError:
        raise ImageFileError("not readable (permission denied)") from None
    if width < 1 or height < 1:
        raise ImageFileError(f"empty image ({width}x{height} px)")
    return ImageHeader(image_format, width, height)
