// Small pieces every page uses.
import type { ComponentChildren } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { count, duration, usd } from "../format";
import { Text, Value } from "./value";

export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs]);
  return now;
}

export function Countdown({ until_us }: { until_us: number }) {
  const now = useNow();
  const left = until_us / 1000 - now;
  const urgent = left < 60_000;
  return (
    <span class={urgent ? "countdown urgent" : "countdown"} title="time left to decide">
      {left <= 0 ? "expired" : `${duration(left / 1000)} left`}
    </span>
  );
}

export function ErrorBox({ error }: { error: string | null }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function Badge({ kind, children }: { kind: string; children: ComponentChildren }) {
  return <span class={`badge badge-${kind.replace(/[^a-z_]/g, "")}`}>{children}</span>;
}

// Whether a JSON pointer in `redacted` is this argument or inside it.
function hidden(redacted: string[], name: string): boolean {
  const pointer = "/" + name.replace(/~/g, "~0").replace(/\//g, "~1");
  return redacted.some((p) => p === pointer || p.startsWith(pointer + "/"));
}

// A table's column headings.
export function Head({ cols }: { cols: string[] }) {
  return (
    <thead>
      <tr>
        {cols.map((c, i) => (
          <th scope="col" key={i}>
            {c}
          </th>
        ))}
      </tr>
    </thead>
  );
}

const ROWS = 50; // arguments shown before "show more"

/** A call's arguments, one row each: names and values as text with hazards marked, large ones collapsed. */
export function ArgsTable({ args, redacted = [] }: { args: Record<string, unknown>; redacted?: string[] }) {
  const names = useMemo(() => Object.keys(args), [args]);
  const [rows, setRows] = useState(ROWS);
  if (!names.length) return <p class="muted">no arguments</p>;
  return (
    <>
      <table class="args">
        <Head cols={["argument", "value"]} />
        <tbody>
          {names.slice(0, rows).map((name) => (
            <tr key={name}>
              <th scope="row">
                <code>
                  <Text text={name} />
                </code>
              </th>
              <td>
                <code class="value" dir="ltr">
                  <Value value={args[name]} />
                </code>
                {hidden(redacted, name) || args[name] === "[REDACTED]" ? (
                  <span class="badge badge-redacted" title="removed before it was stored">
                    redacted
                  </span>
                ) : null}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {names.length > rows ? (
        <p class="more">
          {count(rows)} of {count(names.length)} arguments shown{" "}
          <button type="button" onClick={() => setRows(rows + ROWS * 10)}>
            Show {count(Math.min(ROWS * 10, names.length - rows))} more
          </button>
        </p>
      ) : null}
    </>
  );
}

// One term of a <dl class="facts">, shown only `when` there is something to say (an absent
// field, undefined, hides it too: no default, which would turn undefined into true).
export function Fact({ label, when, children }: { label: string; when: unknown; children: ComponentChildren }) {
  return when ? (
    <>
      <dt>{label}</dt>
      <dd>{children}</dd>
    </>
  ) : null;
}

// Money spent on LLM calls: calls of models without a price are flagged, never counted as $0.
export function Spend({ cost, calls, unpriced }: { cost: string | number; calls: number; unpriced: number }) {
  if (calls > 0 && unpriced === calls) return <Badge kind="unpriced">unpriced</Badge>;
  return (
    <>
      {usd(cost)}
      {unpriced ? <Badge kind="unpriced">+{unpriced} unpriced</Badge> : null}
    </>
  );
}

export function Loading() {
  return <p class="muted">Loading…</p>;
}
