/** The API's shapes, as far as the dashboard reads them (docs/api.md has the full ones). */

export interface Forecast {
  projected_used: number | null;
  projected_amount: string | null;
  exhausts_at: string | null;
}

export interface MeterUsage {
  used: number;
  limit: number | null;
  percent: number | null;
  hard_limit: boolean;
  amount: string;
  plan_limit?: number | null;
  effective_limit?: number | null;
  forecast?: Forecast;
}

export interface UsageView {
  tenant_id: string;
  plan_id: string;
  plan_name?: string;
  plan_version: number;
  period: { start: string; end: string; interval: 'day' | 'month' | 'year' };
  metrics: Record<string, MeterUsage>;
  costs: { base_fee: string; usage: string; total: string; currency: string; projected_total?: string | null };
  alert_level?: string;
  pending_events: number;
  as_of: string;
}

export interface Tenant {
  id: string;
  name: string;
  plan_id: string;
  status: string;
  workflow_id: string;
  current_period?: { start: string; end: string } | null;
  usage?: { percent: number | null; total: string; currency: string; alert_level: string } | null;
}

export interface UsageEvent {
  id: string;
  metric: string;
  quantity: number;
  timestamp: string;
  properties: Record<string, unknown> | null;
  cost?: string | null;
}

export interface Period {
  id: string;
  start: string;
  end: string;
  status: string;
  counters: Record<string, number>;
  totals: { invoice_id: string; subtotal: string; total: string; currency: string } | null;
  invoice_ids: string[];
}

export interface InvoiceLine {
  metric: string | null;
  description: string;
  quantity: number;
  amount: string;
}

export interface Invoice {
  id: string;
  number: number | null;
  tenant_id: string;
  status: string;
  version: number;
  period_start: string;
  period_end: string;
  plan_id?: string;
  currency: string;
  lines: InvoiceLine[];
  total: string;
  amount_due?: string;
}

export interface Alert {
  id: string;
  tenant_id?: string;
  kind?: string;
  metric: string | null;
  threshold: number;
  level: string;
  status: string;
  used: number;
  limit: number;
  fired_at: string;
  acknowledged_at?: string | null;
}

export interface Balance {
  currency: string;
  balance: string;
  uncharged: string;
  available: string;
  total_charged: string;
  low_balance_threshold: string | null;
  estimated_units_remaining: Record<string, number>;
  days_remaining: number | null;
}

export interface Pack {
  id: string;
  metric: string;
  units: number;
  remaining: number;
  purchased_at: string;
  expires_at: string | null;
  status: string;
}

/** One line a rerun would change (`dry_run`): null on the side that lacks the line. */
export interface RerunChange {
  line: string;
  description: string;
  before: { quantity: number; amount: string } | null;
  after: { quantity: number; amount: string } | null;
  /** null across currencies. */
  delta: string | null;
}

export interface Summary {
  id: string;
  tenant_id: string;
  month: string;
  /** `used` is an exact decimal string. */
  metrics: Record<string, { used: string; amount: string }>;
  total: string;
  currency: string;
  change?: { total: string | null; percent: number | null } | null;
  /** False while a period of the row is not invoiced yet (its figures still move). */
  final?: boolean;
}
