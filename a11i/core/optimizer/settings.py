"""The optimizer's settings and the names of its strategies. Pure: no I/O, never read from the
environment here (``a11i.sidecar.config`` builds them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from a11i.core.policy import WalletState

WHITESPACE: Final = "whitespace"
JSON_MINIFY: Final = "json_minify"
DEDUPE: Final = "dedupe"
RAG_FILTER: Final = "rag_filter"
TRUNCATE_TOOL_RESULTS: Final = "truncate_tool_results"
COMPACT_HISTORY: Final = "compact_history"

#: Strategies that keep every piece of information the model saw.
LOSSLESS: Final[frozenset[str]] = frozenset({WHITESPACE, JSON_MINIFY, DEDUPE})
#: Strategies that drop information; only worth it when the budget is nearly spent.
LOSSY: Final[frozenset[str]] = frozenset({RAG_FILTER, TRUNCATE_TOOL_RESULTS, COMPACT_HISTORY})
ALL_STRATEGIES: Final[frozenset[str]] = LOSSLESS | LOSSY

#: Which way a retrieval score points: "higher" (similarity, relevance), "lower" (distance), or
#: "auto": from the field's name (``distance``/``_distance`` are lower-is-better).
ScoreOrder = Literal["auto", "higher", "lower"]
SCORE_ORDERS: Final[frozenset[str]] = frozenset({"auto", "higher", "lower"})


@dataclass(frozen=True, slots=True)
class OptimizerSettings:
    """Which strategies run at which wallet state, and their knobs."""

    #: Strategies run when the wallet is Yellow (calls are only warned): lossless by default.
    at_yellow: frozenset[str] = LOSSLESS
    #: Strategies run when the wallet is Red or Exhausted-but-let-through: all by default.
    at_red: frozenset[str] = ALL_STRATEGIES
    #: RAG filter: drop retrieved chunks scoring worse than this (None: no threshold).
    rag_min_score: float | None = None
    #: RAG filter: keep at most this many best-scoring chunks per result (None: no cap).
    rag_top_k: int | None = None
    #: RAG filter: which way the score points ("auto" reads it from the field's name).
    rag_score_order: ScoreOrder = "auto"
    #: Compaction never touches the last this-many messages (at least 1).
    keep_last_turns: int = 6
    #: Old tool results (outside the kept tail) are cut to this many characters.
    tool_result_max_chars: int = 4000
    #: Stop applying lossy steps once the estimated reduction reaches this fraction (0: all).
    target_reduction: float = 0.0
    #: Compaction summarises history in blocks of at least this many messages, so the summary
    #: of turns 1..k stays byte-identical (and cached) until the next block is complete.
    summary_block_messages: int = 8
    #: At most this many characters of summary per block (the user's words always stay).
    summary_block_chars: int = 3000

    def __post_init__(self) -> None:
        unknown = (self.at_yellow | self.at_red) - ALL_STRATEGIES
        if unknown:
            raise ValueError(f"unknown optimizer strategies: {sorted(unknown)}")
        if self.keep_last_turns < 1:
            raise ValueError("keep_last_turns must be at least 1")
        if self.tool_result_max_chars < 1:
            raise ValueError("tool_result_max_chars must be at least 1")
        if self.rag_top_k is not None and self.rag_top_k < 1:
            raise ValueError("rag_top_k must be at least 1")
        if self.rag_score_order not in SCORE_ORDERS:
            raise ValueError(f"rag_score_order must be one of {sorted(SCORE_ORDERS)}")
        if not 0.0 <= self.target_reduction < 1.0:
            raise ValueError("target_reduction must be in [0, 1)")
        if self.summary_block_messages < 2:
            raise ValueError("summary_block_messages must be at least 2")
        if self.summary_block_chars < 200:
            raise ValueError("summary_block_chars must be at least 200")

    def strategies_for(self, state: WalletState) -> frozenset[str]:
        """The strategies enabled in ``state``: none while Green (or Suspended: never sent)."""
        if state is WalletState.YELLOW:
            return self.at_yellow
        if state in (WalletState.RED, WalletState.EXHAUSTED):
            return self.at_red
        return frozenset()
