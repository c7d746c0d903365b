/**
 * The PDF of an invoice (`GET /v1/invoices/{id}/pdf`), rendered with pdfkit from the invoice as
 * the API presents it, so the PDF and the JSON can never show different figures. Standard
 * Helvetica only (WinAnsi text: `×` and `–` are in it, arrows are not), no images, no I/O.
 */
import PDFDocument from 'pdfkit';
import { Dec, minorUnits, toDecimalString } from '../domain/decimal';
import type { InvoiceLineChange } from './changes';

/** Who issues the invoices: the first lines of every PDF. A constant until sellers are configurable. */
export const SELLER = { name: 'tally', line: 'Usage billing by tally' } as const;

/** One tier of a line's breakdown, as stored (`TierLine` of `src/domain/rating.ts`). */
export interface PdfTier {
  tier: number;
  quantity: string;
  unit_price: string;
  flat_fee: string;
  amount: string;
}

/** The invoice fields the PDF shows: the shape `presentInvoice` returns. */
export interface PdfInvoice {
  id: string;
  number: number | null;
  tenant_id: string;
  status: string;
  version: number;
  period_start: string | null;
  period_end: string | null;
  plan_id: string;
  plan_version: number;
  currency: string;
  lines: Array<{ metric: string; description: string; quantity: number; amount: string; tiers?: PdfTier[] }>;
  subtotal: string;
  total: string;
  created_at?: string | null;
  finalized_at: string | null;
  voided_at?: string | null;
  replaces?: string;
  replaced_by?: string;
  reason?: string;
  changes?: InvoiceLineChange[];
}

/** The billed tenant as the PDF names it. */
export interface PdfTenant {
  id: string;
  name: string;
}

const MARGIN = 50;
const PAGE = { width: 595.28, height: 841.89 }; // A4 in points
const RIGHT = PAGE.width - MARGIN;
const COLUMNS = { description: MARGIN, quantity: 340, amount: 450 };
const WIDTHS = { description: 280, quantity: 100, amount: RIGHT - 450 };
const GREY = '#555555';

/** `2026-11-01T00:00:00.000Z` -> `2026-11-01 00:00:00 UTC`: what a reader files by. */
function day(iso: string | null | undefined): string {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : '-';
}

/** An exact tier amount with at least the currency's minor digits: `100` -> `100.00`, `0.0125` stays. */
function exactMoney(value: string, currency: string): string {
  const plain = toDecimalString(value);
  const digits = plain.includes('.') ? plain.length - plain.indexOf('.') - 1 : 0;
  return digits >= minorUnits(currency) ? plain : new Dec(plain).toFixed(minorUnits(currency));
}

/** `1 × 0.10 = 0.10`, with `+ flat fee` when the tier has one: one sub-line per tier. */
function tierText(tier: PdfTier, currency: string): string {
  const flat = toDecimalString(tier.flat_fee) === '0' ? '' : ` + ${exactMoney(tier.flat_fee, currency)} flat fee`;
  return `Tier ${tier.tier}: ${toDecimalString(tier.quantity)} × ${tier.unit_price}${flat} = ${exactMoney(tier.amount, currency)}`;
}

/**
 * Renders one invoice version: seller, bill-to (tenant name and id), number, period, status,
 * plan, one row per line with its tier breakdown, subtotal, total and currency. A `void`
 * version carries a large diagonal "VOID" watermark on every page; a rerun says which version it
 * replaces, why, and what changed.
 */
export async function renderInvoicePdf(invoice: PdfInvoice, tenant: PdfTenant, seller: { name: string; line: string } = SELLER): Promise<Buffer> {
  const doc = new PDFDocument({
    size: 'A4',
    margin: MARGIN,
    bufferPages: true,
    info: {
      Title: `Invoice ${invoice.number ?? '(draft)'} - ${tenant.name}`,
      Author: seller.name,
      Subject: `Invoice ${invoice.id}`,
      CreationDate: invoice.finalized_at ? new Date(invoice.finalized_at) : new Date(),
    },
  });
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    doc.on('data', (chunk: Buffer) => chunks.push(chunk));
    doc.on('end', () => resolve(Buffer.concat(chunks)));
    doc.on('error', reject);
  });

  const bottom = PAGE.height - MARGIN - 20;
  const ensureRoom = (height: number) => {
    if (doc.y + height > bottom) doc.addPage();
  };
  const field = (label: string, value: string) => {
    doc.font('Helvetica-Bold').fontSize(10).fillColor('black').text(`${label}: `, MARGIN, doc.y, { continued: true });
    doc.font('Helvetica').text(value);
  };

  // Seller and title.
  doc.font('Helvetica-Bold').fontSize(22).fillColor('black').text(seller.name, MARGIN, MARGIN);
  doc.font('Helvetica').fontSize(10).fillColor(GREY).text(seller.line);
  doc.font('Helvetica-Bold').fontSize(18).fillColor('black').text('INVOICE', MARGIN, MARGIN, { width: RIGHT - MARGIN, align: 'right' });
  doc.moveDown(2.5);

  // Who is billed, and the invoice's identity.
  doc.font('Helvetica-Bold').fontSize(11).text('Bill to', MARGIN, doc.y);
  doc.font('Helvetica').fontSize(10).text(tenant.name);
  doc.fillColor(GREY).text(`Tenant id: ${tenant.id}`).fillColor('black');
  doc.moveDown();
  field('Invoice number', invoice.number === null ? '(draft, numbered at finalization)' : String(invoice.number));
  field('Invoice id', `${invoice.id} (version ${invoice.version})`);
  field('Status', invoice.status.toUpperCase());
  field('Period', `${day(invoice.period_start)} to ${day(invoice.period_end)}`);
  field('Plan', `${invoice.plan_id} v${invoice.plan_version}`);
  if (invoice.finalized_at) field('Finalized', day(invoice.finalized_at));
  if (invoice.replaces) field('Replaces', invoice.replaces);
  if (invoice.reason) field('Reason', invoice.reason);
  if (invoice.replaced_by) field('Replaced by', invoice.replaced_by);
  if (invoice.voided_at) field('Voided', day(invoice.voided_at));
  doc.moveDown();

  // The lines.
  const row = (cells: { description: string; quantity: string; amount: string }, style: { bold?: boolean; size?: number; color?: string; indent?: number } = {}) => {
    doc.font(style.bold ? 'Helvetica-Bold' : 'Helvetica').fontSize(style.size ?? 10).fillColor(style.color ?? 'black');
    const indent = style.indent ?? 0;
    const height = Math.max(
      doc.heightOfString(cells.description, { width: WIDTHS.description - indent }),
      doc.heightOfString(cells.quantity || ' ', { width: WIDTHS.quantity }),
    );
    ensureRoom(height);
    const y = doc.y;
    doc.text(cells.description, COLUMNS.description + indent, y, { width: WIDTHS.description - indent });
    if (cells.quantity) doc.text(cells.quantity, COLUMNS.quantity, y, { width: WIDTHS.quantity, align: 'right' });
    if (cells.amount) doc.text(cells.amount, COLUMNS.amount, y, { width: WIDTHS.amount, align: 'right' });
    doc.x = MARGIN;
    doc.y = y + height + 3;
  };
  const rule = () => {
    ensureRoom(6);
    doc.moveTo(MARGIN, doc.y).lineTo(RIGHT, doc.y).lineWidth(0.5).strokeColor('#999999').stroke();
    doc.y += 4;
  };

  row({ description: 'Description', quantity: 'Quantity', amount: `Amount (${invoice.currency})` }, { bold: true });
  rule();
  for (const line of invoice.lines) {
    row({ description: line.description, quantity: String(line.quantity), amount: line.amount });
    for (const tier of line.tiers ?? []) row({ description: tierText(tier, invoice.currency), quantity: '', amount: '' }, { size: 8.5, color: GREY, indent: 14 });
  }
  rule();
  row({ description: 'Subtotal', quantity: '', amount: invoice.subtotal });
  row({ description: `Total (${invoice.currency})`, quantity: '', amount: `${invoice.total} ${invoice.currency}` }, { bold: true, size: 12 });

  // A rerun shows what changed from the version it replaces.
  if (invoice.replaces && invoice.changes) {
    doc.moveDown();
    ensureRoom(40);
    doc.font('Helvetica-Bold').fontSize(11).fillColor('black').text(`Changes from ${invoice.replaces}`, MARGIN, doc.y);
    doc.moveDown(0.3);
    if (invoice.changes.length === 0) row({ description: 'No line changed.', quantity: '', amount: '' }, { size: 9, color: GREY });
    for (const change of invoice.changes) {
      const quantity = `${change.quantity_before ?? '-'} -> ${change.quantity_after ?? '-'}`;
      const amounts = `${change.amount_before ?? '-'} -> ${change.amount_after ?? '-'}${change.delta === null ? '' : ` (${change.delta.startsWith('-') ? '' : '+'}${change.delta})`}`;
      row({ description: change.description, quantity, amount: amounts }, { size: 9, color: GREY });
    }
  }

  // Every page: the footer, and the watermark of a void version.
  const range = doc.bufferedPageRange();
  for (let i = range.start; i < range.start + range.count; i += 1) {
    doc.switchToPage(i);
    const bottomMargin = doc.page.margins.bottom;
    doc.page.margins.bottom = 0; // writing in the margin must not open a new page
    doc.font('Helvetica').fontSize(8).fillColor(GREY);
    doc.text(`${seller.name} - invoice ${invoice.id} - page ${i - range.start + 1} of ${range.count}`, MARGIN, PAGE.height - MARGIN, {
      width: RIGHT - MARGIN,
      align: 'center',
      lineBreak: false,
    });
    if (invoice.status === 'void') {
      doc.save();
      doc.rotate(-45, { origin: [PAGE.width / 2, PAGE.height / 2] });
      doc.font('Helvetica-Bold').fontSize(160).fillColor('#cc0000').fillOpacity(0.18);
      doc.text('VOID', 0, PAGE.height / 2 - 80, { width: PAGE.width, align: 'center', lineBreak: false });
      doc.restore();
    }
    doc.page.margins.bottom = bottomMargin;
  }
  doc.end();
  return done;
}
