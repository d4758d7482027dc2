"""A compact byte-pair encoder: tiktoken's tokens from one copy of the vocabulary (native/bpe)."""

class Encoding:
    """One encoding from its ranks file (``<base64 token> <rank>`` lines) and split pattern.

    Raises ``ValueError`` for a malformed file, a token listed twice or a bad pattern."""

    def __init__(self, name: str, ranks: bytes, pattern: str) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def heap_bytes(self) -> int:
        """Bytes the vocabulary and its lookup table hold."""

    def __len__(self) -> int: ...
    def encode_ordinary(self, text: str) -> list[int]:
        """The tokens of ``text``, special-token text as ordinary text (as tiktoken's)."""

    def count_ordinary(self, text: str) -> int:
        """``len(encode_ordinary(text))`` without building the list."""
