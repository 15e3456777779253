"""Policy as code: the engine and the shipped bundles.

The node needs only what is re-exported here; docs/policies.md describes the language,
the tooling and this API.
"""

from policies.decision_log import DecisionLog, PolicyDecisionRow
from policies.engine import PolicyEngine
from policies.explain import Explanation, explain
from policies.holder import PolicyHolder
from policies.model import Decision, Obligations, PolicyInput
from policies.obligations import apply_obligations
from policies.schema import load_bundle, parse_bundle
from policies.signing import sign_bundle, sign_bundle_bytes

__all__ = [
    "Decision",
    "DecisionLog",
    "Explanation",
    "Obligations",
    "PolicyDecisionRow",
    "PolicyEngine",
    "PolicyHolder",
    "PolicyInput",
    "apply_obligations",
    "explain",
    "load_bundle",
    "parse_bundle",
    "sign_bundle",
    "sign_bundle_bytes",
]
