// The API's shapes, as the dashboard reads them: aliases onto the types generated from the
// server's OpenAPI document (api.gen.ts, `npm run types`), so they cannot drift from the API.

import type { components } from "./api.gen";

type Schemas = components["schemas"];

export type Approval = Schemas["ApprovalOut"];
export type Signed = Schemas["Signed"];
// Audit records are open (each kind adds its fields): the common ones typed, the rest unknown.
export type AuditEvent = Schemas["AuditEvent"];
export type EventPage = Schemas["Page"];
export type EventDetail = Schemas["EventDetail"];
export type CallPage = Schemas["CallPage"];
export type CallRow = Schemas["CallOut"];
export type SessionSummary = Schemas["SessionSummary"];

export type Revision = Schemas["RevisionOut"];
export type Assignment = Schemas["AssignmentOut"];
export type Problem = Schemas["Problem"];
export type Validation = Schemas["Validation"];
export type HistoryReport = Schemas["HistoryReport"];
export type Replayed = Schemas["Replayed"];
export type PolicyDiff = Schemas["PolicyDiff"];

export type Key = Schemas["KeyOut"];
export type KeyCreated = Schemas["KeyCreated"];
export type User = Schemas["UserOut"];
export type Role = Schemas["RoleOut"];
export type ChannelState = Schemas["ChannelState"];
export type Integrations = Schemas["Integrations"];
export type TestResult = Schemas["TestResult"];

export type Usage = Schemas["UsageOut"];
export type BudgetUse = Schemas["BudgetUse"];
export type Spend = Schemas["SpendOut"];
export type SpendSeries = Schemas["SpendSeriesOut"];

export type Grant = Schemas["GrantOut"];
export type GrantLimits = Schemas["GrantLimitsOut"];
export type GrantIn = Schemas["GrantIn"];
export type ExtendIn = Schemas["ExtendIn"];

export type ShadowReport = Schemas["ShadowReportOut"];
export type ShadowActive = Schemas["ShadowActiveOut"];
export type ShadowExample = Schemas["ShadowExampleOut"];
export type ShadowCleared = Schemas["ShadowCleared"];
export type Activation = Schemas["Activation"];

export type Decision = Schemas["DecisionOut"];
export type DecisionPage = Schemas["DecisionPage"];
export type DecisionChange = Schemas["ChangeOut"];
