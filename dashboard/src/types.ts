// The API's shapes, as the dashboard reads them.

export interface Approval {
  id: string;
  call_id: string;
  status: string;
  tool: string;
  agent: string;
  environment: string;
  session: string | null;
  args: Record<string, unknown>;
  args_hash: string;
  rule_ids: string[];
  reason: string;
  policy_revision: string;
  approvers: string[];
  on_timeout: string;
  created_at_us: number;
  expires_at_us: number;
  decided_by: string | null;
  decided_at_us: number | null;
  note: string | null;
  requested_by: string | null;
  edited_args: Record<string, unknown> | null;
  quorum: number;
  escalate_to: string[];
  escalated_at_us: number | null;
  votes: { by: string; at_us: number }[];
  mode: string;
  claimed_by: string | null;
  finished_at_us: number | null;
  result: unknown;
  error: string | null;
}

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

export interface Signed {
  username: string;
  roles: string[];
  csrf_token: string;
}
