// Approve with edited arguments: one typed input per argument, checked as you type, then a
// review of proposed against edited values before anything is sent.
import { useMemo, useState } from "preact/hooks";
import { value as show } from "../format";
import { Head } from "../ui/common";

type Kind = "number" | "boolean" | "string" | "json" | "redacted";

interface Field {
  name: string;
  kind: Kind;
  original: unknown;
  text: string;
}

function kindOf(v: unknown): Kind {
  if (v === "[REDACTED]") return "redacted";
  if (typeof v === "number") return "number";
  if (typeof v === "boolean") return "boolean";
  if (typeof v === "string") return "string";
  return "json";
}

function initial(args: Record<string, unknown>): Field[] {
  return Object.entries(args).map(([name, v]) => {
    const kind = kindOf(v);
    return { name, kind, original: v, text: kind === "string" || kind === "redacted" ? String(v) : JSON.stringify(v) };
  });
}

function parse(field: Field): { ok: true; value: unknown } | { ok: false; problem: string } {
  switch (field.kind) {
    case "redacted":
      return { ok: true, value: field.original };
    case "string":
      return { ok: true, value: field.text };
    case "boolean":
      return { ok: true, value: field.text === "true" };
    case "number": {
      const n = Number(field.text);
      if (field.text.trim() === "" || !Number.isFinite(n)) return { ok: false, problem: "must be a number" };
      return { ok: true, value: n };
    }
    case "json":
      try {
        return { ok: true, value: JSON.parse(field.text) as unknown };
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
  const [fields, setFields] = useState(() => initial(props.args));
  const [reviewing, setReviewing] = useState(false);
  const parsed = useMemo(() => fields.map((f) => ({ field: f, result: parse(f) })), [fields]);
  const invalid = parsed.some((p) => !p.result.ok);
  const changed: Record<string, unknown> = {};
  for (const { field, result } of parsed)
    if (result.ok && !same(result.value, field.original)) changed[field.name] = result.value;
  const names = Object.keys(changed);

  const set = (name: string, text: string) =>
    setFields((all) => all.map((f) => (f.name === name ? { ...f, text } : f)));

  if (reviewing)
    return (
      <section class="review" aria-label="Review the edit">
        <h3>Approve with these changes?</h3>
        <table class="diff">
          <Head cols={["argument", "proposed by the agent", "to run"]} />
          <tbody>
            {names.map((name) => (
              <tr key={name}>
                <th scope="row">
                  <code>{name}</code>
                </th>
                <td class="old">
                  <code>{show(props.args[name])}</code>
                </td>
                <td class="new">
                  <code>{show(changed[name])}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <p class="muted">The edited call is checked against the policy again before it runs.</p>
        <div class="actions">
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
      onSubmit={(e) => {
        e.preventDefault();
        if (!invalid && names.length) setReviewing(true);
      }}
    >
      <h3>Edit arguments</h3>
      {parsed.map(({ field, result }) => (
        <div class="field" key={field.name}>
          <label for={`arg-${field.name}`}>
            <code>{field.name}</code> <span class="muted">{field.kind}</span>
          </label>
          {field.kind === "boolean" ? (
            <input
              id={`arg-${field.name}`}
              type="checkbox"
              checked={field.text === "true"}
              onChange={(e) => set(field.name, String(e.currentTarget.checked))}
            />
          ) : field.kind === "json" || (field.kind === "string" && field.text.length > 80) ? (
            <textarea
              id={`arg-${field.name}`}
              value={field.text}
              aria-invalid={!result.ok}
              onInput={(e) => set(field.name, e.currentTarget.value)}
            />
          ) : (
            <input
              id={`arg-${field.name}`}
              type={field.kind === "number" ? "number" : "text"}
              step="any"
              value={field.text}
              readOnly={field.kind === "redacted"}
              aria-invalid={!result.ok}
              onInput={(e) => set(field.name, e.currentTarget.value)}
            />
          )}
          {field.kind === "redacted" ? <span class="muted">hidden from view; kept as the agent sent it</span> : null}
          {!result.ok ? (
            <span class="field-error" role="alert">
              {result.problem}
            </span>
          ) : null}
        </div>
      ))}
      <label>
        Note for the agent (optional)
        <textarea name="note" maxLength={2000} value={props.note} onInput={(e) => props.onNote(e.currentTarget.value)} />
      </label>
      <div class="actions">
        <button type="submit" class="primary" disabled={invalid || !names.length}>
          Review changes
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
      {!names.length && !invalid ? <p class="muted">Change a value to review the edit.</p> : null}
    </form>
  );
}
