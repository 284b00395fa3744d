// Small pieces every page uses.
import type { ComponentChildren } from "preact";
import { useEffect, useId, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { ago, count, duration, moment, usd, utc, when } from "../format";
import { Text, Value } from "./value";

export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs]);
  return now;
}

// A moment: local time, "3m ago" beside it, the UTC time on hover and for screen readers' title.
export function Time({ us, relative = true }: { us: number | null | undefined; relative?: boolean }) {
  const now = useNow(30_000);
  if (us === null || us === undefined) return <span class="muted">—</span>;
  const d = moment(us);
  if (d === null) return <span>{when(us)}</span>; // a time from an agent no calendar holds, as its number
  return (
    <time dateTime={d.toISOString()} title={utc(us)}>
      {when(us)}
      {relative ? <span class="muted"> · {ago(us, now)}</span> : null}
    </time>
  );
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

/**
 * Asks before doing something that is hard to undo: a modal dialog (the browser's own <dialog>,
 * so focus stays inside it and the page behind is inert), named by its title and described by
 * its text. Cancel has focus first; Escape cancels; focus returns to what opened it.
 * Render it while asking: `{asking ? <Confirm … onConfirm={…} onCancel={() => setAsking(false)} /> : null}`.
 */
export function Confirm({
  title,
  children,
  confirm,
  cancel = "Cancel",
  danger = false,
  busy = false,
  onConfirm,
  onCancel,
}: {
  title: string;
  children: ComponentChildren;
  confirm: string;
  cancel?: string;
  danger?: boolean;
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const safe = useRef<HTMLButtonElement>(null);
  const id = useId();
  useLayoutEffect(() => {
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    const box = dialog.current!;
    box.showModal();
    safe.current?.focus();
    return () => {
      if (box.open) box.close();
      const back = opener?.isConnected ? opener : document.getElementById("main");
      back?.focus();
    };
  }, []);
  return (
    <dialog
      ref={dialog}
      class="confirm-dialog"
      aria-labelledby={`${id}-title`}
      aria-describedby={`${id}-text`}
      onCancel={(event) => {
        event.preventDefault(); // the parent closes it, by no longer rendering it
        if (!busy) onCancel();
      }}
    >
      <h2 id={`${id}-title`}>{title}</h2>
      <div id={`${id}-text`}>{children}</div>
      <div class="actions">
        <button type="button" ref={safe} disabled={busy} onClick={onCancel}>
          {cancel}
        </button>
        <button type="button" class={danger ? "danger" : "primary"} disabled={busy} onClick={onConfirm}>
          {confirm}
        </button>
      </div>
    </dialog>
  );
}

// Newer / older pages of a keyset-paged list: `cursors` holds the cursor of each page shown so far.
export function Pager(props: {
  cursors: (string | null)[];
  next: string | null | undefined;
  onChange: (cursors: (string | null)[]) => void;
}) {
  const { cursors, next, onChange } = props;
  return (
    <div class="pager">
      <button type="button" disabled={cursors.length < 2} onClick={() => onChange(cursors.slice(0, -1))}>
        ← Newer
      </button>
      <span class="muted">page {cursors.length}</span>
      <button type="button" disabled={!next} onClick={() => next && onChange([...cursors, next])}>
        Older →
      </button>
    </div>
  );
}
