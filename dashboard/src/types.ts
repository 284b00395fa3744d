// The API's shapes, as the dashboard reads them: aliases onto the types generated from the
// server's OpenAPI document (api.gen.ts, `npm run types`), so they cannot drift from the API.

import type { components } from "./api.gen";

type Schemas = components["schemas"];

export type Approval = Schemas["ApprovalOut"];
export type Signed = Schemas["Signed"];

// Audit records are open (each kind adds its fields); the API types them as objects.
export interface AuditEvent {
  seq: number;
  hash: string;
  id: string;
  kind: string;
  at_us: number;
  agent: string;
  environment: string;
  session: string | null;
  tool?: string | null;
  call_id?: string;
  decision?: string;
  args?: Record<string, unknown>;
  args_redacted?: string[];
  reason?: string;
  rule_ids?: string[];
  policy_revision?: string;
  error?: string;
  [field: string]: unknown;
}
