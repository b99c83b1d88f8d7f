"""Judges that score model responses (refusal vs. compliance)."""

from harmcore.judges.refusal import (
    WEI_REFUSAL_KEYWORDS,
    JudgeResult,
    RefusalKeywordJudge,
    refusal_rate,
)

__all__ = [
    "WEI_REFUSAL_KEYWORDS",
    "JudgeResult",
    "RefusalKeywordJudge",
    "refusal_rate",
]
