from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearance import PolicyError, load_policy, parse_policy


def problems(text: str, source: str = "p.yaml") -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source)
    return [str(p) for p in info.value.problems]


def test_a_valid_policy_compiles_with_a_content_revision() -> None:
    text = "version: 1\ntools:\n  t:\n    rules:\n      - {id: r, when: args.x > 1, effect: block}\n"
    a, b = parse_policy(text), parse_policy(text)
    assert a.revision == b.revision and a.revision.startswith("rev_")
    assert parse_policy(text + "default: block\n").revision != a.revision


def test_malformed_yaml_names_file_line_and_column() -> None:
    [p] = problems("version: 1\ntools:\n  t: {rules: [\n")
    assert p == "p.yaml:4:1: the file ends inside a [ list or { mapping: close it"


def test_duplicate_keys_are_malformed() -> None:
    [p] = problems("version: 1\ndefault: allow\ndefault: block\n")
    assert p == "p.yaml:3:1: the key 'default' appears twice in one mapping (first at line 2)"


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == ["p.yaml:1:1: a policy must be a mapping with 'version: 1' at the top"]


def test_missing_and_wrong_version() -> None:
    assert problems("default: allow\n") == ["p.yaml:1:1: 'version' is required"]
    [p] = problems("version: 2\n")
    assert p == "p.yaml:1:10: 'version' should be 1, not the number 2"


def test_unknown_effect_names_the_rule_line_and_column() -> None:
    text = "version: 1\ntools:\n  refund:\n    rules:\n      - id: big\n        effect: deny\n"
    [p] = problems(text)
    assert p == (
        "p.yaml:6:17: rule 'big': 'effect' should be 'allow', 'require_approval' or 'block', not the text 'deny'"
    )


def test_unknown_key_suggests_the_close_one() -> None:
    text = "version: 1\ntools:\n  refund:\n    rules:\n      - id: big\n        effect: block\n        wen: x\n"
    assert problems(text) == ["p.yaml:7:9: rule 'big': unknown key 'wen'; did you mean 'when'?"]
    assert problems("version: 1\ncolour: red\n") == [
        "p.yaml:2:1: unknown key 'colour'; expected one of version, default, tools, budgets, redact"
    ]


def test_a_null_value_is_located_at_itself() -> None:
    text = "version: 1\ntools:\n  t:\n    rules:\n      - id: r\n        effect:\n"
    [p] = problems(text)
    assert p.startswith("p.yaml:6:") and "rule 'r': 'effect'" in p


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "version: 1\ntools:\n  a:\n    rules:\n      - {id: x, effect: nope}\n"
        "      - {id: y, effect: block, extra: 1}\n"
    )
    assert len(problems(text)) == 2


def test_cel_syntax_error_points_into_the_condition() -> None:
    text = "version: 1\ntools:\n  t:\n    rules:\n      - id: r1\n        when: args.amount >\n        effect: block\n"
    assert problems(text) == ["p.yaml:6:28: rule 'r1': syntax error: the condition ends too early"]


def test_quoted_condition_positions_skip_the_quote() -> None:
    text = (
        "version: 1\ntools:\n  t:\n    params: {amount: number}\n    rules:\n"
        '      - id: r2\n        when: "args.amont > 3"\n        effect: block\n'
    )
    # column 20 is the '.' of args.amont, as CEL points at a selection (the quote at 15 skipped)
    assert problems(text) == ["p.yaml:7:20: rule 'r2': the tool has no parameter 'amont' (its parameters: amount)"]


def test_block_scalar_condition_positions_use_the_source_line() -> None:
    text = (
        "version: 1\ntools:\n  t:\n    rules:\n      - id: r3\n        when: |\n"
        "          args.amount > 1 &&\n            facts.nope > 2\n        effect: block\n"
    )
    [p] = problems(text)
    assert p.startswith("p.yaml:8:18: rule 'r3': unknown fact 'facts.nope'; facts are session_cost_usd")


def test_declared_params_type_check_conditions_at_load_time() -> None:
    base = "version: 1\ntools:\n  t:\n    params: {note: string, amount: number}\n    rules:\n"
    [p] = problems(base + "      - {id: r, when: 'args.note + 1 > 2', effect: block}\n")
    assert p == "p.yaml:6:34: rule 'r': '+' cannot combine text and a whole number"
    [p] = problems(base + "      - {id: r, when: 'args.note', effect: block}\n")
    assert p.endswith("a condition must be true or false; this one gives text")
    # Numbers compare with integer literals whether the model sends 850 or 850.0.
    parse_policy(base + "      - {id: r, when: 'args.amount > 200 && args.note.startsWith(\"x\")', effect: block}\n")


def test_sum_fact_must_name_a_declared_parameter() -> None:
    text = (
        "version: 1\ntools:\n  t:\n    params: {amount: number}\n    rules:\n"
        "      - {id: r, when: 'facts.sum_1h_total > 5', effect: block}\n"
    )
    [p] = problems(text)
    assert "facts.sum_1h_total sums 'total', which is not a parameter of this tool" in p


def test_unknown_and_zero_window_facts() -> None:
    text = "version: 1\ntools:\n  t:\n    rules:\n      - {id: r, when: 'facts.calls_0h > 1', effect: block}\n"
    [p] = problems(text)
    assert "unknown fact 'facts.calls_0h'" in p


def test_duplicate_rule_ids_are_rejected() -> None:
    text = (
        "version: 1\ntools:\n  a:\n    rules:\n      - {id: same, effect: block}\n"
        "  b:\n    rules:\n      - {id: same, effect: allow}\n"
    )
    assert problems(text) == ["p.yaml:8:14: rule 'same': duplicate rule id 'same' (first used at line 5)"]


def test_params_on_a_glob_and_approval_on_a_block_rule() -> None:
    [p] = problems("version: 1\ntools:\n  'db.*':\n    params: {x: string}\n")
    assert "'params' can only be declared for one tool name" in p
    [p] = problems("version: 1\ntools:\n  t:\n    rules:\n      - {id: r, effect: block, approval: {timeout: 1m}}\n")
    assert "'approval' settings only apply to effect require_approval" in p


def test_bad_duration_and_pointer() -> None:
    [p] = problems(
        "version: 1\ntools:\n  t:\n    rules:\n      - {id: r, effect: require_approval, approval: {timeout: soon}}\n"
    )
    assert "'soon' is not a duration" in p
    [p] = problems("version: 1\nredact:\n  t: [card_number]\n")
    assert p.startswith("p.yaml:3:7:")


def test_json_policy_files_load_with_positions(tmp_path: Path) -> None:
    good = {"version": 1, "tools": {"t": {"rules": [{"id": "r", "when": "args.x > 1", "effect": "block"}]}}}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(good, indent=2))
    assert load_policy(path).decide("t", {"x": 5}, {}).effect.value == "block"
    bad = json.dumps(good, indent=2).replace('"block"', '"deny"')
    path.write_text(bad)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:9:")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file: No such file"):
        load_policy(tmp_path / "nope.yaml")
