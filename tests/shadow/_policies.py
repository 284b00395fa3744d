"""The policies the shadow tests decide with: an enforced one and a stricter shadow of it."""

from __future__ import annotations

ENFORCED = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: huge-refund
        when: args.amount > 1000
        effect: block
        reason: refunds over $1000 are never made
      - id: refund-watch
        when: args.amount > 400
        effect: block
        mode: monitor
        reason: watching refunds over $400
  send_email: {}
"""

# Blocks refunds over $100, asks for a second one within the hour (a fact the enforced policy
# never reads), allows what the enforced blocks between $1000 and $5000, and monitors too.
SHADOW = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: absurd-refund
        when: args.amount > 5000
        effect: block
        reason: refunds over $5000 are never made
      - id: refund-over-100
        when: args.amount > 100 && args.amount <= 1000
        effect: block
        reason: shadow blocks refunds over $100
      - id: refund-again
        when: facts.calls_1h >= 1 && args.amount <= 100
        effect: require_approval
        reason: a second refund within the hour needs a lead
        approval: {timeout: 30m}
      - id: shadow-watch
        when: args.amount > 50
        effect: require_approval
        mode: monitor
        reason: shadow watches refunds over $50
  send_email: {}
"""

# A revision stored as valid by an older version, that this version cannot compile.
UNCOMPILABLE = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: broken
        when: args.amount >
        effect: block
"""
