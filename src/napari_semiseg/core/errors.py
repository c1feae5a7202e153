"""The one exception type that reaches the user, as one sentence they can act on."""


class InputError(Exception):
    """A problem with the user's input, phrased as one sentence the user can act on.

    Deliberately not a ValueError: napari's writer lookup swallows ValueError, which would turn
    "refusing to overwrite your scan" into a vague "no writer" warning.
    """


def is_out_of_memory(err: BaseException) -> bool:
    """torch's CUDA/MPS/CPU allocators, and Python's, each say it differently."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "not enough memory" in text
                                              or "can't allocate memory" in text or "failed to allocate" in text)


def out_of_memory_message(doing: str, device: str = "") -> str:
    where = f" on {device}" if device else ""
    return (f"Out of memory while {doing}{where}: lower the batch size, the patch size or the working scale "
            "(batch_size, patch_size, scale), or close other programs.")
