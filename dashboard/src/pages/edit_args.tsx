// Approve with edited arguments: one typed input per argument, checked as you type, then a
// review of proposed against edited values before anything is sent.
//
// Only the fields on screen are drawn (a page at a time, or those a search finds), and only the
// edited ones are parsed and compared, so an approval with thousands of arguments opens at once
// and typing costs the same as with three. A value holding hidden or direction-changing
// characters is edited as JSON, each such character written as a \u escape: exact, and seen.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { count } from "../format";
import { Head } from "../ui/common";
import { Text, Value } from "../ui/value";
import { escapedJson, segments } from "../visible";

type Kind = "number" | "boolean" | "string" | "json" | "redacted";

interface Field {
  name: string;
  kind: Kind;
  original: unknown;
  text: string; // what the input starts with
  hidden: boolean; // holds characters shown as tokens
}

const PAGE = 50;

function holdsHazards(text: string): boolean {
  return segments(text).some((s) => typeof s !== "string");
}

function fieldOf(name: string, v: unknown): Field {
  const hidden = typeof v === "string" && holdsHazards(v);
  if (v === "[REDACTED]") return { name, kind: "redacted", original: v, text: v, hidden };
  if (typeof v === "number") return { name, kind: "number", original: v, text: JSON.stringify(v), hidden };
  if (typeof v === "boolean") return { name, kind: "boolean", original: v, text: String(v), hidden };
  if (typeof v === "string" && !hidden) return { name, kind: "string", original: v, text: v, hidden };
  const text = escapedJson(v);
  return { name, kind: "json", original: v, text, hidden: hidden || text !== JSON.stringify(v) };
}

type Parsed = { ok: true; value: unknown } | { ok: false; problem: string };

function parse(field: Field, text: string): Parsed {
  if (text === field.text) return { ok: true, value: field.original };
  switch (field.kind) {
    case "redacted":
      return { ok: true, value: field.original };
    case "string":
      return { ok: true, value: text };
    case "boolean":
      return { ok: true, value: text === "true" };
    case "number": {
      const n = Number(text);
      if (text.trim() === "" || !Number.isFinite(n)) return { ok: false, problem: "must be a number" };
      return { ok: true, value: n };
    }
    case "json":
      try {
        return { ok: true, value: JSON.parse(text) as unknown };
      } catch {
        return { ok: false, problem: "must be valid JSON" };
      }
  }
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export function EditArgs(props: {
  args: Record<string, unknown>;
  busy: boolean;
  note: string;
  onNote: (note: string) => void;
  onCancel: () => void;
  onConfirm: (changed: Record<string, unknown>) => void;
}) {
  const names = useMemo(() => Object.keys(props.args), [props.args]);
  const fields = useMemo(() => new Map<string, Field>(), [props.args]); // made when first drawn
  const field = (name: string) => {
    let f = fields.get(name);
    if (!f) fields.set(name, (f = fieldOf(name, props.args[name])));
    return f;
  };
  const [edits, setEdits] = useState<Record<string, string>>({});
  const [find, setFind] = useState("");
  const [shown, setShown] = useState(PAGE);
  const [reviewing, setReviewing] = useState(false);

  // Only edited fields are parsed and compared: typing does not walk every argument.
  const { changed, invalid } = useMemo(() => {
    const out: Record<string, unknown> = {};
    let bad = false;
    for (const [name, text] of Object.entries(edits)) {
      const f = field(name);
      const result = parse(f, text);
      if (!result.ok) bad = true;
      else if (text !== f.text && !same(result.value, f.original)) out[name] = result.value;
    }
    return { changed: out, invalid: bad };
  }, [edits]);
  const changedNames = Object.keys(changed);

  const matching = useMemo(() => {
    const q = find.trim().toLowerCase();
    return q ? names.filter((n) => n.toLowerCase().includes(q)) : names;
  }, [names, find]);
  const set = (name: string, text: string) => setEdits((all) => ({ ...all, [name]: text }));
  // Below a long argument table the form would open out of sight: bring it (and its buttons) in,
  // and put the focus in it (the button that opened it is gone): the first field, or Confirm.
  const top = useRef<HTMLHeadingElement>(null);
  const box = useRef<HTMLElement>(null);
  useEffect(() => {
    top.current?.scrollIntoView({ block: "start" });
    const first = box.current?.querySelector<HTMLElement>(
      reviewing ? "button.primary" : "input:not([readonly]), textarea",
    );
    first?.focus({ preventScroll: true });
  }, [reviewing]);

  if (reviewing)
    return (
      <section class="review" aria-label="Review the edit" ref={box}>
        <h3 ref={top}>Approve with these changes?</h3>
        <table class="diff">
          <Head cols={["argument", "proposed by the agent", "to run"]} />
          <tbody>
            {changedNames.map((name) => (
              <tr key={name}>
                <th scope="row">
                  <code>
                    <Text text={name} />
                  </code>
                </th>
                <td class="old">
                  <code class="value" dir="ltr">
                    <Value value={props.args[name]} />
                  </code>
                </td>
                <td class="new">
                  <code class="value" dir="ltr">
                    <Value value={changed[name]} />
                  </code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <p class="muted">The edited call is checked against the policy again before it runs.</p>
        <div class="actions sticky">
          <button type="button" class="primary" disabled={props.busy} onClick={() => props.onConfirm(changed)}>
            Confirm and approve
          </button>
          <button type="button" onClick={() => setReviewing(false)}>
            Back to editing
          </button>
        </div>
      </section>
    );

  return (
    <form
      class="edit"
      aria-label="Edit arguments"
      ref={box as { current: HTMLFormElement | null }}
      onSubmit={(e) => {
        e.preventDefault();
        if (!invalid && changedNames.length) setReviewing(true);
      }}
    >
      <h3 ref={top}>Edit arguments</h3>
      {names.length > PAGE ? (
        <label class="find">
          Find an argument ({count(names.length)})
          <input type="search" value={find} onInput={(e) => setFind(e.currentTarget.value)} />
        </label>
      ) : null}
      {matching.slice(0, shown).map((name) => (
        <FieldInput key={name} field={field(name)} text={edits[name]} onText={(text) => set(name, text)} />
      ))}
      {matching.length > shown ? (
        <p class="more">
          {count(shown)} of {count(matching.length)} arguments shown{" "}
          <button type="button" onClick={() => setShown(shown + PAGE * 4)}>
            Show {count(Math.min(PAGE * 4, matching.length - shown))} more
          </button>
        </p>
      ) : null}
      {!matching.length ? <p class="muted">No argument has that in its name.</p> : null}
      <label>
        Note for the agent (optional)
        <textarea name="note" maxLength={2000} value={props.note} onInput={(e) => props.onNote(e.currentTarget.value)} />
      </label>
      {!changedNames.length && !invalid ? <p class="muted">Change a value to review the edit.</p> : null}
      <div class="actions sticky">
        <button type="submit" class="primary" disabled={invalid || !changedNames.length}>
          Review changes{changedNames.length ? ` (${changedNames.length})` : ""}
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function FieldInput({ field, text = field.text, onText }: { field: Field; text?: string; onText: (t: string) => void }) {
  const result = parse(field, text);
  const id = `arg-${field.name}`;
  return (
    <div class="field">
      <label for={id}>
        <code>
          <Text text={field.name} />
        </code>{" "}
        <span class="muted">{field.hidden ? `${field.kind}, hidden characters as \\u escapes` : field.kind}</span>
      </label>
      {field.kind === "boolean" ? (
        <input id={id} type="checkbox" checked={text === "true"} onChange={(e) => onText(String(e.currentTarget.checked))} />
      ) : field.kind === "json" || (field.kind === "string" && text.length > 80) ? (
        <textarea
          id={id}
          dir="ltr"
          value={text}
          aria-invalid={!result.ok}
          onInput={(e) => onText(e.currentTarget.value)}
        />
      ) : (
        <input
          id={id}
          dir="ltr"
          type={field.kind === "number" ? "number" : "text"}
          step="any"
          value={text}
          readOnly={field.kind === "redacted"}
          aria-invalid={!result.ok}
          onInput={(e) => onText(e.currentTarget.value)}
        />
      )}
      {field.hidden ? (
        <span class="as-sent">
          as the agent sent it:{" "}
          <code class="value" dir="ltr">
            <Value value={field.original} />
          </code>
        </span>
      ) : null}
      {field.kind === "redacted" ? <span class="muted">hidden from view; kept as the agent sent it</span> : null}
      {!result.ok ? (
        <span class="field-error" role="alert">
          {result.problem}
        </span>
      ) : null}
    </div>
  );
}
