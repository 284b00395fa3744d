// Approve and give more than one call: a grant that lets similar calls through for a while
// (only within the rule's grant_limits), or more budget for the session or agent whose spent
// budget asked. The server checks all of it again; what it refuses comes back as problems, each
// shown beside its field, and the approval stays pending.
import type { ComponentChildren } from "preact";
import { useMemo, useState } from "preact/hooks";
import { ApiError, errorText } from "../api";
import { count, lasting } from "../format";
import type { Approval, ExtendIn, GrantIn, GrantLimits } from "../types";
import { Text, Value } from "../ui/value";
import { visible } from "../visible";

type Scope = GrantLimits["scopes"][number];

const SCOPES: Record<Scope, string> = {
  session: "this session",
  agent: "this agent",
  requester: "the person the agent acts for",
};
const DURATIONS = [900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400];
const MOST_CALLS = 1_000_000; // the server's bound on any grant's max_calls
const SHOWN = 50; // arguments offered before "show more"

/** What the server refused: its message, and each problem by the field it names (`body.grant.max_calls` →
 * `max_calls`), those naming no field under "". */
export interface Refusal {
  message: string;
  fields: Record<string, string[]>;
}

export function refusalOf(error: unknown, part: "grant" | "extend"): Refusal {
  const fields: Record<string, string[]> = {};
  if (!(error instanceof ApiError)) return { message: errorText(error), fields };
  const prefix = `body.${part}.`;
  for (const d of error.details) {
    const field = d.location.startsWith(prefix) ? d.location.slice(prefix.length).split(".", 1)[0] : "";
    fields[field] = [...(fields[field] ?? []), d.message];
  }
  return { message: error.message, fields };
}

// The refusal's headline and the problems that name no field, above the form.
function Refused({ refusal }: { refusal: Refusal | null }) {
  if (!refusal) return null;
  return (
    <div class="refused" role="alert">
      <p>
        <strong>Not approved.</strong> The server refused this; the approval is still pending.
        {Object.keys(refusal.fields).some((f) => f !== "") ? " Each problem is shown beside its field." : ""}
      </p>
      <Problems messages={Object.keys(refusal.fields).length ? refusal.fields[""] : [refusal.message]} />
    </div>
  );
}

function Problems({ messages }: { messages?: string[] }) {
  if (!messages?.length) return null;
  return (
    <ul class="problems field-error" role="alert">
      {messages.map((m, i) => (
        <li key={i}>
          <Text text={m} />
        </li>
      ))}
    </ul>
  );
}

// Problems the page finds before sending (the server would refuse them too).
function wholeInRange(text: string, most: number): string | null {
  if (text.trim() === "") return null;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) return "a whole number, 1 or more";
  if (n > most) return `at most ${count(most)}`;
  return null;
}

function amountInRange(text: string, most: number | null): string | null {
  if (text.trim() === "") return null;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) return "a number above 0";
  if (most !== null && n > most) return `at most ${most} (the rule's limit)`;
  return null;
}

const isScalar = (v: unknown) => v === null || ["string", "number", "boolean"].includes(typeof v);

/** Why a scope cannot be granted for this call (the server's own reasons), or null. */
function unusable(scope: Scope, a: Approval): string | null {
  if (scope === "session" && !a.session) return "the call has no session";
  if (scope === "requester" && !a.requested_by) return "the call names no person the agent acts for";
  return null;
}

export function GrantForm(props: {
  approval: Approval;
  limits: GrantLimits;
  busy: boolean;
  note: string;
  refusal: Refusal | null;
  onNote: (note: string) => void;
  onCancel: () => void;
  onConfirm: (grant: GrantIn) => void;
}) {
  const { approval: a, limits, refusal } = props;
  const args = a.args;
  const [scope, setScope] = useState<Scope>(
    () => limits.scopes.find((s) => unusable(s, a) === null) ?? limits.scopes[0],
  );
  const durations = useMemo(() => {
    const within = DURATIONS.filter((d) => d < limits.max_duration);
    return [...within, limits.max_duration];
  }, [limits.max_duration]);
  const [duration, setDuration] = useState(() => (limits.max_duration >= 3600 ? 3600 : limits.max_duration));
  const [maxCalls, setMaxCalls] = useState(limits.max_calls === null ? "" : String(limits.max_calls));
  const ruleTotal = limits.max_total ? Object.entries(limits.max_total)[0] : undefined;
  const numeric = useMemo(() => Object.keys(args).filter((n) => typeof args[n] === "number"), [args]);
  const [totalArg, setTotalArg] = useState(ruleTotal?.[0] ?? "");
  const [total, setTotal] = useState(ruleTotal?.[1] ?? "");
  const [same, setSame] = useState<Set<string>>(new Set());
  const [atMost, setAtMost] = useState<Record<string, string>>({});
  const [more, setMore] = useState("");
  const [shown, setShown] = useState(SHOWN);
  const scalars = useMemo(() => Object.keys(args).filter((n) => isScalar(args[n])), [args]);

  const callsProblem = wholeInRange(maxCalls, limits.max_calls ?? MOST_CALLS);
  const totalProblem = amountInRange(total, ruleTotal ? Number(ruleTotal[1]) : null);
  const atMostProblems = Object.fromEntries(
    Object.entries(atMost).map(([name, text]) => [name, amountInRange(text, null)]),
  );
  let extra: Record<string, unknown> = {};
  let moreProblem: string | null = null;
  if (more.trim()) {
    try {
      const parsed = JSON.parse(more) as unknown;
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed))
        moreProblem = 'an object of argument constraints, like {"order_id": {"pattern": "^A-"}}';
      else extra = parsed as Record<string, unknown>;
    } catch {
      moreProblem = "not valid JSON";
    }
  }
  const invalid =
    Boolean(callsProblem || totalProblem || moreProblem) ||
    Object.values(atMostProblems).some(Boolean) ||
    unusable(scope, a) !== null;

  const grant = (): GrantIn => {
    const constraints: Record<string, unknown> = { ...extra };
    for (const [name, text] of Object.entries(atMost)) {
      if (text.trim() === "") continue;
      const given = constraints[name];
      const base = given && typeof given === "object" ? (given as Record<string, unknown>) : {};
      constraints[name] = { ...base, maximum: Number(text) };
    }
    const out: GrantIn = { scope, duration, same: scalars.filter((n) => same.has(n)) };
    if (Object.keys(constraints).length) out.constraints = constraints as GrantIn["constraints"];
    if (maxCalls.trim()) out.max_calls = Number(maxCalls);
    if (totalArg && total.trim()) out.max_total = { [totalArg]: Number(total) };
    return out;
  };

  const toggle = (name: string, on: boolean) =>
    setSame((all) => {
      const next = new Set(all);
      if (on) next.add(name);
      else next.delete(name);
      return next;
    });

  return (
    <form
      class="grant-form"
      aria-label="Approve and grant similar calls"
      onSubmit={(e) => {
        e.preventDefault();
        if (!invalid) props.onConfirm(grant());
      }}
    >
      <h3>Approve and grant similar calls</h3>
      <p class="muted">
        Calls of{" "}
        <code>
          <Text text={a.tool} />
        </code>{" "}
        that {a.rule_ids.length ? a.rule_ids.join(", ") : "the same rules"} would put to approval pass without asking,
        within what you set here. Blocking rules still block.
      </p>
      <Refused refusal={refusal} />
      <fieldset>
        <legend>For</legend>
        {limits.scopes.map((s) => {
          const why = unusable(s, a);
          return (
            <label class="inline" key={s}>
              <input
                type="radio"
                name="scope"
                value={s}
                checked={scope === s}
                disabled={why !== null}
                onChange={() => setScope(s)}
              />
              {SCOPES[s]}
              {s === "session" && a.session ? (
                <code class="muted">
                  <Text text={a.session} />
                </code>
              ) : null}
              {s === "agent" ? (
                <code class="muted">
                  <Text text={a.agent} />
                </code>
              ) : null}
              {s === "requester" && a.requested_by ? (
                <code class="muted">
                  <Text text={a.requested_by} />
                </code>
              ) : null}
              {why ? <span class="muted">({why})</span> : null}
            </label>
          );
        })}
        <Problems messages={refusal?.fields.scope} />
      </fieldset>
      <fieldset>
        <legend>Limits</legend>
        <label>
          For how long (at most {lasting(limits.max_duration)})
          <select value={duration} onChange={(e) => setDuration(Number(e.currentTarget.value))}>
            {durations.map((d) => (
              <option key={d} value={d}>
                {lasting(d)}
              </option>
            ))}
          </select>
        </label>
        <Problems messages={refusal?.fields.duration} />
        <label>
          At most this many calls {limits.max_calls === null ? "(optional)" : `(the rule allows ${count(limits.max_calls)})`}
          <input
            type="number"
            inputMode="numeric"
            min={1}
            max={limits.max_calls ?? MOST_CALLS}
            step={1}
            value={maxCalls}
            aria-invalid={callsProblem !== null}
            onInput={(e) => setMaxCalls(e.currentTarget.value)}
          />
        </label>
        <FieldProblem problem={callsProblem} />
        <Problems messages={refusal?.fields.max_calls} />
        {ruleTotal || numeric.length ? (
          <TotalInput
            ruleTotal={ruleTotal}
            numeric={numeric}
            totalArg={totalArg}
            total={total}
            problem={totalProblem}
            onArg={setTotalArg}
            onTotal={setTotal}
          />
        ) : null}
        <Problems messages={refusal?.fields.max_total} />
      </fieldset>
      {scalars.length ? (
        <fieldset>
          <legend>Only calls with the same</legend>
          {scalars.slice(0, shown).map((name) => (
            <label class="inline same" key={name}>
              <input type="checkbox" checked={same.has(name)} onChange={(e) => toggle(name, e.currentTarget.checked)} />
              <code>
                <Text text={name} />
              </code>{" "}
              as this call:{" "}
              <code class="value" dir="ltr">
                <Value value={args[name]} quoted />
              </code>
            </label>
          ))}
          {scalars.length > shown ? (
            <p class="more">
              {count(shown)} of {count(scalars.length)} shown{" "}
              <button type="button" onClick={() => setShown(shown + SHOWN * 10)}>
                Show more
              </button>
            </p>
          ) : null}
          <Problems messages={refusal?.fields.same} />
        </fieldset>
      ) : null}
      <fieldset>
        <legend>Constraints (optional)</legend>
        {numeric.slice(0, 20).map((name) => (
          <Labelled key={name} text={name} suffix="at most">
            <input
              type="number"
              inputMode="decimal"
              step="any"
              value={atMost[name] ?? ""}
              aria-invalid={Boolean(atMostProblems[name])}
              onInput={(e) => setAtMost({ ...atMost, [name]: e.currentTarget.value })}
            />
            <FieldProblem problem={atMostProblems[name] ?? null} />
          </Labelled>
        ))}
        <label>
          Other constraints, in the policy's params syntax (JSON)
          <textarea
            dir="ltr"
            spellcheck={false}
            placeholder='{"order_id": {"pattern": "^A-"}}'
            value={more}
            aria-invalid={moreProblem !== null}
            onInput={(e) => setMore(e.currentTarget.value)}
          />
        </label>
        <FieldProblem problem={moreProblem} />
        <Problems messages={refusal?.fields.constraints} />
      </fieldset>
      <label>
        Note for the agent (optional)
        <textarea name="note" maxLength={2000} value={props.note} onInput={(e) => props.onNote(e.currentTarget.value)} />
      </label>
      <div class="actions sticky">
        <button type="submit" class="primary" disabled={props.busy || invalid}>
          Approve and grant
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

// A label naming a (possibly hostile) argument: its name as isolated text, hazards shown.
function Labelled({ text, suffix, children }: { text: string; suffix: string; children: ComponentChildren }) {
  return (
    <label>
      <span>
        <code>
          <Text text={text} />
        </code>{" "}
        {suffix}
      </span>
      {children}
    </label>
  );
}

function FieldProblem({ problem }: { problem: string | null }) {
  return problem ? (
    <span class="field-error" role="alert">
      {problem}
    </span>
  ) : null;
}

function TotalInput(props: {
  ruleTotal: [string, string] | undefined;
  numeric: string[];
  totalArg: string;
  total: string;
  problem: string | null;
  onArg: (name: string) => void;
  onTotal: (text: string) => void;
}) {
  const { ruleTotal } = props;
  return (
    <div class="field">
      {ruleTotal ? (
        <Labelled text={ruleTotal[0]} suffix={`may total at most (the rule allows ${ruleTotal[1]})`}>
          <input
            type="number"
            inputMode="decimal"
            step="any"
            min={0}
            max={Number(ruleTotal[1])}
            value={props.total}
            aria-invalid={props.problem !== null}
            onInput={(e) => props.onTotal(e.currentTarget.value)}
          />
        </Labelled>
      ) : (
        <>
          <label>
            Limit the running total of (optional)
            <select value={props.totalArg} onChange={(e) => props.onArg(e.currentTarget.value)}>
              <option value="">no total limit</option>
              {props.numeric.map((n) => (
                <option key={n} value={n}>
                  {visible(n)}
                </option>
              ))}
            </select>
          </label>
          {props.totalArg ? (
            <Labelled text={props.totalArg} suffix="may total at most">
              <input
                type="number"
                inputMode="decimal"
                step="any"
                min={0}
                value={props.total}
                aria-invalid={props.problem !== null}
                onInput={(e) => props.onTotal(e.currentTarget.value)}
              />
            </Labelled>
          ) : null}
        </>
      )}
      <FieldProblem problem={props.problem} />
    </div>
  );
}

const USD = /^\d{1,7}(\.\d{1,9})?$/;

export function ExtendForm(props: {
  approval: Approval;
  budget: "session" | "agent";
  busy: boolean;
  note: string;
  refusal: Refusal | null;
  onNote: (note: string) => void;
  onCancel: () => void;
  onConfirm: (extend: ExtendIn) => void;
}) {
  const { refusal } = props;
  const [usd, setUsd] = useState("");
  const [tokens, setTokens] = useState("");
  const usdProblem =
    usd.trim() === "" ? null : !USD.test(usd.trim()) || Number(usd) <= 0 ? "dollars above 0, like 2.50" : null;
  const tokensProblem = wholeInRange(tokens, 10 ** 12);
  const empty = usd.trim() === "" && tokens.trim() === "";
  const whose = props.budget === "session" ? "this session's" : `agent ${visible(props.approval.agent)}'s`;
  return (
    <form
      class="grant-form"
      aria-label="Approve and extend the budget"
      onSubmit={(e) => {
        e.preventDefault();
        if (empty || usdProblem || tokensProblem) return;
        const out: ExtendIn = {};
        if (usd.trim()) out.usd = usd.trim(); // a decimal string: exact
        if (tokens.trim()) out.tokens = Number(tokens);
        props.onConfirm(out);
      }}
    >
      <h3>Approve and extend the budget</h3>
      <p class="muted">
        {whose[0].toUpperCase() + whose.slice(1)} budget is spent; calls go on until the extended budget is spent too.
      </p>
      <Refused refusal={refusal} />
      <fieldset>
        <legend>Extend {whose} budget by</legend>
        <label>
          US dollars
          <input
            type="text"
            inputMode="decimal"
            placeholder="2.50"
            value={usd}
            aria-invalid={usdProblem !== null}
            onInput={(e) => setUsd(e.currentTarget.value)}
          />
        </label>
        <FieldProblem problem={usdProblem} />
        <Problems messages={refusal?.fields.usd} />
        <label>
          Tokens
          <input
            type="number"
            inputMode="numeric"
            min={1}
            step={1}
            value={tokens}
            aria-invalid={tokensProblem !== null}
            onInput={(e) => setTokens(e.currentTarget.value)}
          />
        </label>
        <FieldProblem problem={tokensProblem} />
        <Problems messages={refusal?.fields.tokens} />
      </fieldset>
      <label>
        Note for the agent (optional)
        <textarea name="note" maxLength={2000} value={props.note} onInput={(e) => props.onNote(e.currentTarget.value)} />
      </label>
      {empty ? <p class="muted">Say by how much: dollars, tokens or both.</p> : null}
      <div class="actions sticky">
        <button type="submit" class="primary" disabled={props.busy || empty || Boolean(usdProblem || tokensProblem)}>
          Approve and extend
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
