"""``ffexport lint``: find what TensorRT's ONNX parser rejects, or takes only through a plugin, in a graph.

    from ffexport.lint import lint_model
    for f in lint_model("build/8x112x112.prefill.onnx", target="trt11"):
        print(f.rule, f.node, f.message)

Rules live in :mod:`ffexport.lint.rules` (registered in :data:`RULES`), their sources in
:mod:`ffexport.lint.sources`, and ``docs/tensorrt-lint.md`` lists them. Torch-free; weights are never read.
"""

from ffexport.lint.core import RULES, Const, Finding, LintContext, Rule, RuleRegistry, lint_model, load_graph, rule
from ffexport.lint.tables import TARGETS

import ffexport.lint.rules  # noqa: E402,F401  (registers the built-in rules)

__all__ = ["RULES", "TARGETS", "Const", "Finding", "LintContext", "Rule", "RuleRegistry", "lint_model", "load_graph",
           "rule"]
