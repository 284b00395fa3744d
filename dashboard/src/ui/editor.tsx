// The policy editor: CodeMirror with YAML highlighting and the server's own validation shown
// inline, at the line and column of each problem, as the admin types.
import { useEffect, useRef } from "preact/hooks";
import { basicSetup, EditorView } from "codemirror";
import { yaml } from "@codemirror/lang-yaml";
import { linter, lintGutter, type Diagnostic } from "@codemirror/lint";
import { api, ApiError } from "../api";
import type { Problem, Validation } from "../types";

// Where a problem is: "line 4, column 12", and the policy key path ("tools.refund.rules[0].effect").
export function where(p: Problem): string {
  const at = p.line ? `line ${p.line}${p.column ? `, column ${p.column}` : ""}` : "";
  return [at, p.path].filter(Boolean).join(" · ");
}

function diagnostics(view: EditorView, problems: Problem[]): Diagnostic[] {
  const doc = view.state.doc;
  return problems.map((p) => {
    const line = doc.line(Math.min(Math.max(1, p.line ?? 1), doc.lines));
    const from = Math.min(line.from + Math.max(0, (p.column ?? 1) - 1), line.to);
    return {
      from,
      to: from < line.to ? line.to : from,
      severity: "error",
      // the position and key path in the mark too: a path names the place when the line is a long flow mapping
      source: where(p) || undefined,
      message: (p.rule_id ? `rule ${p.rule_id}: ` : "") + p.message,
    };
  });
}

export function PolicyEditor(props: {
  text: string;
  onChange: (text: string) => void;
  onValidated: (result: Validation) => void;
}) {
  const host = useRef<HTMLDivElement>(null);
  const callbacks = useRef(props);
  callbacks.current = props;

  useEffect(() => {
    const validate = linter(
      async (view) => {
        const text = view.state.doc.toString();
        if (!text.trim()) {
          const message = "the policy is empty: it starts with version: 1";
          const problem = { message, line: 1, column: 1, rule_id: null, path: null };
          callbacks.current.onValidated({ valid: false, revision: null, problems: [problem] });
          return [];
        }
        try {
          const result = await api<Validation>("/v1/policies/validate", { method: "POST", body: { text } });
          callbacks.current.onValidated(result);
          return diagnostics(view, result.problems);
        } catch (e) {
          if (e instanceof ApiError && e.status === 413) {
            // too large to send at all: say so where problems are shown, not nothing
            const message = "the policy is too large to check: the server takes at most 1 MiB per request";
            const problem = { message, line: null, column: null, rule_id: null, path: null };
            callbacks.current.onValidated({ valid: false, revision: null, problems: [problem] });
          }
          return []; // the server is unreachable: the page says so when saving
        }
      },
      { delay: 400 },
    );
    const view = new EditorView({
      doc: props.text,
      parent: host.current!,
      extensions: [
        basicSetup,
        yaml(),
        lintGutter(),
        validate,
        EditorView.contentAttributes.of({ "aria-label": "Policy (YAML)" }),
        // The page's Content-Security-Policy admits CodeMirror's <style> element by this nonce.
        EditorView.cspNonce.of(document.querySelector('meta[name="csp-nonce"]')?.getAttribute("content") ?? ""),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) callbacks.current.onChange(update.state.doc.toString());
        }),
      ],
    });
    return () => view.destroy();
  }, []);

  return <div class="editor" ref={host} />;
}
