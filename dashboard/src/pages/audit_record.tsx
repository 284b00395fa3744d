// One audit record in full: its fields as a person reads them (who decided, their note and edits,
// what it cost, how long it ran), its place in the hash chain, and the whole record as stored.
// A row is shown only when the record has a value for it.
import { useEffect, useState } from "preact/hooks";
import { api, errorText } from "../api";
import { count, millis, tokens, usd, value } from "../format";
import { href } from "../router";
import type { AuditEvent, EventDetail } from "../types";
import { ArgsTable, Badge, ErrorBox, Fact, Loading, Time } from "../ui/common";
import { Edits, has, shown } from "../ui/record";
import { TraceFact } from "../ui/trace";
import { HazardWarning, JsonText, Text } from "../ui/value";

const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

// Who a record says acted: an approver decides; a process runs an approved call.
function actor(kind: string): string {
  if (kind === "approval.executed" || kind === "approval.failed") return "Run by";
  if (kind.startsWith("approval.")) return "Decided by";
  if (kind.startsWith("policy.")) return "Activated by";
  if (kind.startsWith("grant.")) return "By";
  return "By";
}

function LlmFacts({ e }: { e: AuditEvent }) {
  const input = num(e.input_tokens);
  const output = num(e.output_tokens);
  const cached = num(e.cached_input_tokens);
  const reasoning = num(e.reasoning_tokens);
  const parts = [
    input !== undefined ? `${count(input)} in${cached ? ` (${count(cached)} cached)` : ""}` : null,
    output !== undefined ? `${count(output)} out` : null,
    reasoning ? `${count(reasoning)} reasoning` : null,
  ].filter(Boolean);
  return (
    <>
      <Fact label="Model" when={has(e.model)}>
        <Text text={shown(e.model)} /> {has(e.provider) ? (
          <span class="muted">
            <Text text={shown(e.provider)} />
          </span>
        ) : null}
      </Fact>
      <Fact label="Tokens" when={num(e.tokens) !== undefined || parts.length > 0}>
        {num(e.tokens) !== undefined ? tokens(num(e.tokens)) : null}
        {parts.length ? <span class="muted"> ({parts.join(", ")})</span> : null}
      </Fact>
      <Fact label="Cost" when={true}>
        {e.priced ? usd(value(e.cost_usd)) : <Badge kind="unpriced">unpriced model</Badge>}
      </Fact>
      <Fact label="Latency" when={num(e.latency_ms) !== undefined}>
        {millis(num(e.latency_ms))}
      </Fact>
    </>
  );
}

export function EventDetailPage({ seq }: { seq: string }) {
  const [detail, setDetail] = useState<EventDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<EventDetail>(`/v1/events/${encodeURIComponent(seq)}`)
      .then(setDetail)
      .catch((e) => setError(errorText(e)));
  }, [seq]);
  if (error) return <ErrorBox error={error} />;
  if (!detail) return <Loading />;
  const { event: e, chain } = detail;
  const kind = e.kind ?? "";
  const rules = Array.isArray(e.rule_ids) ? e.rule_ids.map(value).join(", ") : "";
  return (
    <article class="event">
      <button type="button" class="link back" onClick={() => history.back()}>
        ← Back
      </button>
      <h1>
        Record {e.seq} <code>{kind || "unreadable record"}</code>
      </h1>
      <HazardWarning value={e} what="record" />
      <dl class="facts">
        <Fact label="Time" when={num(e.at_us) !== undefined}>
          <Time us={num(e.at_us)} />
        </Fact>
        <Fact label="Agent" when={has(e.agent)}>
          <Text text={shown(e.agent)} />
          {has(e.environment) ? (
            <span class="muted">
              {" "}
              (<Text text={shown(e.environment)} />)
            </span>
          ) : null}
        </Fact>
        <Fact label="Session" when={has(e.session)}>
          <a href={href(["sessions", value(e.session)])}>
            <Text text={shown(e.session)} />
          </a>
        </Fact>
        <Fact label="Tool" when={has(e.tool)}>
          <code>
            <Text text={shown(e.tool)} />
          </code>
        </Fact>
        <Fact label={kind === "tool_call.decided" ? "Decision" : "Status"} when={has(e.decision)}>
          <Badge kind={value(e.decision)}>
            <Text text={shown(e.decision)} />
          </Badge>{" "}
          {has(e.reason) ? <Text text={shown(e.reason)} /> : null}
        </Fact>
        <Fact label="Reason" when={!has(e.decision) && has(e.reason)}>
          <Text text={shown(e.reason)} />
        </Fact>
        <Fact label="Rules" when={rules}>
          <Text text={rules} />
        </Fact>
        <Fact label="Policy revision" when={has(e.policy_revision)}>
          <code>
            <Text text={shown(e.policy_revision)} />
          </code>
        </Fact>
        <Fact label={actor(kind)} when={has(e.by)}>
          <Text text={shown(e.by)} />
        </Fact>
        <Fact label="Note" when={has(e.note)}>
          <Text text={shown(e.note)} />
        </Fact>
        <Fact label="Changed" when={Array.isArray(e.changes) && e.changes.length > 0}>
          <Edits event={e} />
        </Fact>
        <Fact label="Votes" when={num(e.votes) !== undefined && num(e.quorum) !== undefined}>
          {num(e.votes)} of {num(e.quorum)}
        </Fact>
        <Fact label="Asked of" when={Array.isArray(e.approvers) && e.approvers.length > 0}>
          <Text text={Array.isArray(e.approvers) ? e.approvers.map(value).join(", ") : ""} />
        </Fact>
        <Fact label="Agent waited" when={num(e.waited_ms) !== undefined}>
          {millis(num(e.waited_ms))}
        </Fact>
        <Fact label="Ran for" when={num(e.duration_ms) !== undefined}>
          {millis(num(e.duration_ms))}
        </Fact>
        <Fact label="Error" when={has(e.error)}>
          <span class="error">
            <Text text={shown(e.error)} />
          </span>
        </Fact>
        {kind === "llm.call" ? <LlmFacts e={e} /> : null}
        <Fact label="Approval" when={typeof e.approval_id === "string" && e.approval_id !== ""}>
          <a href={href(["approvals", value(e.approval_id)])}>
            <Text text={shown(e.approval_id)} />
          </a>
        </Fact>
        <Fact label="Call" when={typeof e.call_id === "string" && e.call_id !== ""}>
          <a href={href(["audit"], { call_id: value(e.call_id) })}>
            <Text text={shown(e.call_id)} />
          </a>
        </Fact>
        <TraceFact trace={e.trace} />
        <dt>Chain</dt>
        <dd>
          position {chain.seq} of {chain.head_seq} ·{" "}
          {chain.verified ? (
            <Badge kind="ok">verified</Badge>
          ) : (
            <Badge kind="error">does not verify: {chain.problem}</Badge>
          )}
          <div class="hashes">
            <span>
              hash <code>{chain.hash}</code>
            </span>
            <span>
              follows <code>{chain.prev_hash}</code>
            </span>
          </div>
        </dd>
      </dl>
      {e.args && typeof e.args === "object" && !Array.isArray(e.args) ? (
        <>
          <h2>Arguments</h2>
          <ArgsTable args={e.args} redacted={Array.isArray(e.args_redacted) ? e.args_redacted : []} />
          {Array.isArray(e.args_redacted) && e.args_redacted.length ? (
            <p class="muted">
              Redacted before storage: <Text text={e.args_redacted.map(value).join(", ")} />
            </p>
          ) : null}
        </>
      ) : null}
      {e.edited_args && typeof e.edited_args === "object" && !Array.isArray(e.edited_args) ? (
        <>
          <h2>Arguments the approver approved</h2>
          <ArgsTable args={e.edited_args as Record<string, unknown>} />
        </>
      ) : null}
      <h2>Whole record</h2>
      <JsonText value={e} />
    </article>
  );
}
