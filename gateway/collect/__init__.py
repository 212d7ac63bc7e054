"""`r2 collect`: build R2-Bench-style outcome data for your own deployments.

Every question x model x policy is sent through the gateway's own forwarding path (the policy's
instruction and `max_tokens` applied by `gateway.rewrite.apply_policy`, then LiteLLM), scored
(exact match of the chosen letter for multiple choice, an LLM judge otherwise) and appended to
an outcome file that `r2 train` and `r2 eval` read. See docs/collect.md.
"""

from router_core.training.readers import meta_path

from .costs import CostCapReached, CostMeter, Price
from .judge import DEFAULT_JUDGE_PROMPT, parse_judge_score, render_judge_prompt
from .letters import extract_choice
from .questions import Question, load_questions, mcq_prompt, parse_question, split_of
from .runner import Arm, Collector, Completer, RunOptions, RunReport, build_row, read_answer
from .session import CollectResult, collect
from .store import OutcomeStore, write_meta
from .summary import ArmSummary, format_summary, summarize

__all__ = [
    "Arm",
    "ArmSummary",
    "CollectResult",
    "Collector",
    "Completer",
    "CostCapReached",
    "CostMeter",
    "DEFAULT_JUDGE_PROMPT",
    "OutcomeStore",
    "Price",
    "Question",
    "RunOptions",
    "RunReport",
    "build_row",
    "collect",
    "extract_choice",
    "format_summary",
    "load_questions",
    "mcq_prompt",
    "meta_path",
    "parse_judge_score",
    "parse_question",
    "read_answer",
    "render_judge_prompt",
    "split_of",
    "summarize",
    "write_meta",
]
