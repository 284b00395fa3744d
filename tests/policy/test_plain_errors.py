"""Policy problems in plain words: what is wrong, where (line, column, key path), never a
validator's jargon ("input should be a valid tuple", "no matching overload for '_>_'")."""

from __future__ import annotations

import re

import pytest

from clearance import PolicyError, parse_policy
from clearance.errors import PolicyProblem

RULE = "version: 1\ntools:\n  issue_refund:\n    rules:\n      - id: r\n"
JARGON = re.compile(
    r"input should|valid (tuple|dictionary|list|integer|decimal)|instance of|overload|_[<>=+]+_|Syntax error"
    r"|\*error\*|CANCELLED|recursion limit|mismatched input|extraneous input|<EOF>|\bdyn\b|in container"
)


def problems(text: str) -> list[PolicyProblem]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return info.value.problems


def one(text: str) -> PolicyProblem:
    [p] = problems(text)
    assert not JARGON.search(p.message), p.message
    return p


def test_a_scalar_where_a_list_goes_says_list() -> None:
    p = one("version: 1\ntools:\n  t:\n    rules: 5\n")
    assert p.message == "'rules' should be a list (one '- ' line per item, or [a, b]), not the number 5"
    assert (p.line, p.column, p.path) == (4, 12, "tools.t.rules")


def test_a_rule_written_without_its_dash_is_told_to_add_it() -> None:
    p = one("version: 1\ntools:\n  t:\n    rules:\n      id: x\n      effect: block\n")
    assert p.message.startswith("'rules' should be a list") and "not a mapping" in p.message
    assert "start each item with '- '" in p.message
    assert (p.line, p.path) == (5, "tools.t.rules")


def test_a_list_where_a_mapping_goes_says_mapping() -> None:
    p = one("version: 1\ntools: [a, b]\n")
    assert p.message == "'tools' should be a mapping (key: value lines), not a list"
    assert (p.line, p.column, p.path) == (2, 8, "tools")
    p = one("version: 1\ntools:\n  t: 5\n")
    assert p.message == "'t' should be a mapping (key: value lines), not the number 5"
    assert p.path == "tools.t"


def test_approvers_as_one_string_says_list() -> None:
    p = one(RULE + "        effect: require_approval\n        approval: {approvers: 'role:lead'}\n")
    assert p.message == "'approvers' should be a list (one '- ' line per item, or [a, b]), not the text 'role:lead'"
    assert (p.line, p.column, p.rule_id) == (7, 31, "r")
    assert p.path == "tools.issue_refund.rules[0].approval.approvers"


def test_numbers_booleans_and_choices() -> None:
    p = one(RULE + "        effect: require_approval\n        approval: {quorum: lots}\n")
    assert p.message == "'quorum' should be a whole number, not the text 'lots'"
    p = one("version: 1\nbudgets:\n  session: {max_cost_usd: lots}\n")
    assert p.message == "'max_cost_usd' should be a number, not the text 'lots'"
    assert p.path == "budgets.session.max_cost_usd"
    p = one("version: 1\ndefault: true\n")
    assert p.message == "'default' should be 'allow', 'require_approval' or 'block', not true"
    p = one(RULE + "        effect: deny\n")
    assert p.message == "'effect' should be 'allow', 'require_approval' or 'block', not the text 'deny'"
    assert (p.line, p.column, p.path) == (6, 17, "tools.issue_refund.rules[0].effect")
    p = one("version: 2\n")
    assert p.message == "'version' should be 1, not the number 2"
    p = one(RULE + "        effect: block\n        mode: 3\n")
    assert p.message == "'mode' should be 'enforce' or 'monitor', not the number 3"


def test_list_items_are_named_by_their_index() -> None:
    p = one("version: 1\nredact:\n  t: [card_number]\n")
    assert p.message.startswith("'t[0]' should be a JSON pointer such as /card_number")
    assert (p.line, p.column, p.path) == (3, 7, "redact.t[0]")
    p = one(RULE + "        effect: require_approval\n        approval: {approvers: [5]}\n")
    assert p.path == "tools.issue_refund.rules[0].approval.approvers"  # the approver check names the item itself


def test_unknown_keys_carry_their_path() -> None:
    p = one("version: 1\ntools:\n  t:\n    rulez: []\n")
    assert p.message == "unknown key 'rulez'; did you mean 'rules'?"
    assert (p.line, p.column, p.path) == (4, 5, "tools.t.rulez")


def test_odd_keys_are_quoted_in_the_path() -> None:
    p = one("version: 1\ntools:\n  'db.*':\n    rules: x\n")
    assert p.path == 'tools["db.*"].rules'
    p = one("version: 1\nredact:\n  t: [/a, 'x\u202ey']\n")
    assert p.path == "redact.t[1]" and "\u202e" not in p.message  # a bidi override is shown escaped


def test_rule_ids_say_what_they_may_hold() -> None:
    p = one("version: 1\ntools:\n  t:\n    rules:\n      - {id: 'a b', effect: block}\n")
    assert p.message == "'id' may hold letters, digits and _ . : - (starting with a letter or digit), not 'a b'"
    assert p.path == "tools.t.rules[0].id"


def test_conditions_in_plain_words() -> None:
    p = one(RULE + "        when: args.x + 'a' > 3\n        effect: block\n")
    assert p.message == "'>' cannot compare text with a whole number"
    assert (p.line, p.column, p.path) == (6, 28, "tools.issue_refund.rules[0].when")
    p = one(RULE + "        when: size(1) > 2\n        effect: block\n")
    assert p.message == "'size' cannot take a whole number"
    p = one(RULE + "        when: args.x ==== 2\n        effect: block\n")
    assert p.message == "syntax error: unexpected '=='"
    p = one(RULE + "        when: (args.x > 1\n        effect: block\n")
    assert p.message == "syntax error: a ')' is missing"
    p = one(RULE + "        when: args.x > 1)\n        effect: block\n")
    assert p.message == "syntax error: unexpected ')' after the end of the condition"
    p = one(RULE + "        when: args.x > 1 ? 2\n        effect: block\n")
    assert p.message == "syntax error: the condition ends too early (expected ':')"
    p = one(RULE + "        when: 1 + 1\n        effect: block\n")
    assert p.message == "a condition must be true or false; this one gives a whole number"
    p = one(RULE + "        when: " + "(" * 40 + "true" + ")" * 40 + "\n        effect: block\n")
    assert p.message == "the condition nests too deeply: at most 32 levels of brackets, calls or fields"
    [first, second] = problems(RULE + '        when: "\'abc"\n        effect: block\n')
    assert first.message == "syntax error: a quote is not closed ('abc)"


def test_a_mistake_is_reported_once_not_again_for_what_follows_from_it() -> None:
    text = "version: 1\ntools:\n  t:\n    params: {n: number}\n    rules:\n"
    p = one(text + "      - {id: r, when: 'args.x.startsWith(1)', effect: block}\n")
    assert p.message == "the tool has no parameter 'x' (its parameters: n)"
    p = one(text + "      - {id: r, when: 'args.n + \"a\" > 2', effect: block}\n")
    assert p.message == "'>' cannot compare text with a whole number"  # a number (any value) + text is text
    p = one(text + "      - {id: r, when: '!args.n + 1 > 2', effect: block}\n")
    assert p.message.startswith("'+' cannot combine true or false and a whole number")


def test_tabs_duplicate_keys_and_open_quotes_in_plain_words() -> None:
    p = one("version: 1\ntools:\n\tt: {}\n")
    assert p.message == "a tab indents this line; YAML indents with spaces only"
    assert (p.line, p.column, p.path) == (3, 1, None)
    p = one("version: 1\ntools:\n  t: {}\n  t: {}\n")
    assert p.message == "the key 't' appears twice in one mapping (first at line 3)"
    assert (p.line, p.column) == (4, 3)
    p = one("version: 1\ndefault: 'allow\n")
    assert p.message.startswith("a quote is not closed")


def test_deep_nesting_is_refused_before_it_can_exhaust_the_stack() -> None:
    for text in (
        "version: 1\ntools:\n  t:\n    params:\n      a: " + "[" * 5000 + "]" * 5000 + "\n",
        "version: 1\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "version: 1\n" + "".join(" " * i + f"k{i}:\n" for i in range(0, 600)),
    ):
        p = one(text)
        assert p.message.startswith("the policy nests more than 32 levels deep here")
        assert p.line is not None and p.column is not None


def test_a_large_policy_is_validated_whole() -> None:
    tools = "".join(
        f"  tool_{n}:\n    rules:\n      - {{id: r{n}, when: 'args.amount > {n}', effect: block}}\n"
        for n in range(2000)
    )
    parse_policy("version: 1\ntools:\n" + tools)
    bad = tools.replace("effect: block}\n", "effect: nope}\n", 1)
    p = one("version: 1\ntools:\n" + bad)
    assert p.path == "tools.tool_0.rules[0].effect"


def test_every_message_of_a_malformed_corpus_is_plain_and_located() -> None:
    corpus = [
        "version: 1\ntools: 3\n",
        "version: 1\nbudgets: []\n",
        "version: 1\nbudgets:\n  session: {max_tokens: -5}\n",
        "version: 1\nbudgets:\n  agent: {window: forever}\n",
        "version: 1\ntools:\n  t:\n    params:\n      a: {type: strin}\n",
        "version: 1\ntools:\n  t:\n    params:\n      a: {type: string, enum: x}\n",
        "version: 1\ntools:\n  t:\n    params:\n      a: {type: number, minimum: yes}\n",
        "version: 1\ntools:\n  t:\n    params:\n      a: {type: string, max_length: -1}\n",
        RULE + "        effect: require_approval\n        approval: {quorum: 0}\n",
        RULE + "        effect: require_approval\n        approval: {grants: {scopes: [galaxy]}}\n",
        RULE + "        effect: require_approval\n        approval: {grants: {max_calls: 1.5}}\n",
        RULE + "        effect: require_approval\n        approval: {on_timeout: later}\n",
        RULE + "        effect: block\n        when: ''\n",
        RULE + "        effect: block\n        when: [a]\n",
        RULE + "        effect: block\n        reason: {a: 1}\n",
        "version: 1\nredact: {t: 5}\n",
        "version: 1\ndefault: allow\ndefault: block\n",
        "version: 1\ntools:\n  t: {rules: [\n",
    ]
    for text in corpus:
        for p in problems(text):
            assert not JARGON.search(p.message), (text, p.message)
            assert p.line is not None and p.column is not None, (text, p)


def test_aliases_of_aliases_cannot_expand_without_bound() -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    p = one("\n".join(lines) + "\n")
    assert p.message == "the policy holds more than 300,000 values (aliases counted each time they are used)"
    assert p.line is not None
