/**
 * The PDF of an invoice (`GET /v1/invoices/{id}/pdf`), rendered with pdfkit from the invoice as
 * the API presents it, so the PDF and the JSON can never show different figures. All text is set
 * in DejaVu Sans, regular and bold (the `dejavu-fonts-ttf` package), embedded as a subset of the
 * glyphs the document uses: tenant names, plan names, line descriptions and reasons print as text
 * in Latin with diacritics, Greek, Cyrillic, Armenian, Georgian and Hebrew, and so do symbols
 * such as `→ × – €`. A right-to-left word is shaped right to left, but there is no bidirectional
 * reordering: several Hebrew words in a row keep their left-to-right order. DejaVu has no CJK
 * glyphs: Chinese, Japanese or Korean text does not fail the render, it prints as missing-glyph
 * boxes and is absent from the text layer. The two font files are read and parsed once per
 * process, on the first render; no images, no other I/O. The bytes depend only on the arguments
 * (the creation date is the finalization time; only a draft's is the time of rendering).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
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
  lines: Array<{ metric: string; description: string; quantity: number; amount: string; tiers?: PdfTier[]; packs?: Array<{ pack_id: string; units: string }> }>;
  subtotal: string;
  total: string;
  /** Prepaid credit applied, and what is left to pay (absent: no credit shown). */
  credits_applied?: string;
  amount_due?: string;
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

/** What this module uses of a fontkit glyph run and font (fontkit has no type declarations). */
interface GlyphRun {
  direction: 'ltr' | 'rtl';
  glyphs: Array<{ codePoints: number[] }>;
  positions: unknown[];
}
interface Face {
  layout(text: string, features?: unknown): GlyphRun;
  _glyphs?: unknown;
}

/**
 * A parsed face as pdfkit gets it: pdfkit lays text out one space-ended word at a time (`"שלום "`)
 * and fontkit reverses a right-to-left word's glyphs, its trailing space with them, which would
 * print the space before the word and none between it and the next one. This face puts that
 * space back after the word. Everything else is the parsed font's own (prototype delegation).
 */
function spaceAfterRightToLeft(font: Face): Face {
  const face = Object.create(font) as Face;
  face.layout = (text, features) => {
    const run = font.layout(text, features);
    const [first] = run.glyphs;
    if (run.direction === 'rtl' && run.glyphs.length > 1 && /[ \t]$/.test(text) && first && [0x20, 0x09].includes(first.codePoints[0]!)) {
      run.glyphs.push(run.glyphs.shift()!);
      run.positions.push(run.positions.shift());
    }
    return run;
  };
  return face;
}

const FACES = { regular: 'DejaVuSans.ttf', bold: 'DejaVuSans-Bold.ttf' } as const;
type FaceName = keyof typeof FACES;
/** DejaVu Sans, regular and bold: read and parsed on the first render, kept for the process. */
let dejaVu: { fontkit: { create(data: Buffer): Face }; bytes: Record<FaceName, Buffer>; fonts: Record<FaceName, Face>; faces: Record<FaceName, Face> } | undefined;

/**
 * The two faces for one render, as the parsed fontkit `Font`s pdfkit 0.20 accepts (`@types/pdfkit`
 * does not say so yet). They are parsed once: parsing DejaVu's cmap, kerning and ligature tables
 * anew for every document (what pdfkit does with a file's bytes) costs several times the rest of
 * the render. fontkit caches each glyph with the characters it was first reached from (`fl` from
 * `f` `l`, or from a literal `ﬂ`) and pdfkit writes those characters to the text layer, so the
 * cache is emptied before every render: a PDF then depends only on its invoice, never on what the
 * process rendered before. A render is synchronous from its first glyph to its embedded subsets,
 * so two renders never share the cache. Should fontkit ever keep its glyphs elsewhere, each render
 * parses its own faces.
 */
function fonts(): Record<FaceName, PDFKit.Mixins.PDFFontSource> {
  if (!dejaVu) {
    const dir = path.join(path.dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
    // The fontkit pdfkit itself depends on, so the parsed fonts are the objects it expects.
    const fontkit = createRequire(require.resolve('pdfkit'))('fontkit') as { create(data: Buffer): Face };
    const bytes = { regular: readFileSync(path.join(dir, FACES.regular)), bold: readFileSync(path.join(dir, FACES.bold)) };
    const parsed = { regular: fontkit.create(bytes.regular), bold: fontkit.create(bytes.bold) };
    dejaVu = {
      fontkit,
      bytes,
      fonts: parsed,
      faces: { regular: spaceAfterRightToLeft(parsed.regular), bold: spaceAfterRightToLeft(parsed.bold) },
    };
  }
  for (const name of Object.keys(FACES) as FaceName[]) {
    const font = dejaVu.fonts[name];
    if (typeof font._glyphs === 'object' && font._glyphs !== null) {
      font._glyphs = {};
    } else {
      dejaVu.fonts[name] = dejaVu.fontkit.create(dejaVu.bytes[name]);
      dejaVu.faces[name] = spaceAfterRightToLeft(dejaVu.fonts[name]);
    }
  }
  return dejaVu.faces as unknown as Record<FaceName, PDFKit.Mixins.PDFFontSource>;
}
/** The names the document registers the two faces under. */
const REGULAR = 'DejaVuSans';
const BOLD = 'DejaVuSans-Bold';

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
  const { regular, bold } = fonts();
  doc.registerFont(REGULAR, regular);
  doc.registerFont(BOLD, bold);
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
    doc.font(BOLD).fontSize(10).fillColor('black').text(`${label}: `, MARGIN, doc.y, { continued: true });
    doc.font(REGULAR).text(value);
  };

  // Seller and title.
  doc.font(BOLD).fontSize(22).fillColor('black').text(seller.name, MARGIN, MARGIN);
  doc.font(REGULAR).fontSize(10).fillColor(GREY).text(seller.line);
  doc.font(BOLD).fontSize(18).fillColor('black').text('INVOICE', MARGIN, MARGIN, { width: RIGHT - MARGIN, align: 'right' });
  doc.moveDown(2.5);

  // Who is billed, and the invoice's identity.
  doc.font(BOLD).fontSize(11).text('Bill to', MARGIN, doc.y);
  doc.font(REGULAR).fontSize(10).text(tenant.name);
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
    doc.font(style.bold ? BOLD : REGULAR).fontSize(style.size ?? 10).fillColor(style.color ?? 'black');
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
    for (const draw of line.packs ?? []) row({ description: `from add-on pack ${draw.pack_id} (not billed as usage)`, quantity: draw.units, amount: '' }, { size: 8.5, color: GREY, indent: 14 });
  }
  rule();
  row({ description: 'Subtotal', quantity: '', amount: invoice.subtotal });
  row({ description: `Total (${invoice.currency})`, quantity: '', amount: `${invoice.total} ${invoice.currency}` }, { bold: true, size: 12 });
  if (invoice.credits_applied !== undefined && invoice.amount_due !== undefined && Number(invoice.credits_applied) > 0) {
    row({ description: 'Prepaid credit applied', quantity: '', amount: `-${invoice.credits_applied}` });
    row({ description: `Amount due (${invoice.currency})`, quantity: '', amount: `${invoice.amount_due} ${invoice.currency}` }, { bold: true, size: 12 });
  }

  // A rerun shows what changed from the version it replaces.
  if (invoice.replaces && invoice.changes) {
    doc.moveDown();
    ensureRoom(40);
    doc.font(BOLD).fontSize(11).fillColor('black').text(`Changes from ${invoice.replaces}`, MARGIN, doc.y);
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
    doc.font(REGULAR).fontSize(8).fillColor(GREY);
    doc.text(`${seller.name} - invoice ${invoice.id} - page ${i - range.start + 1} of ${range.count}`, MARGIN, PAGE.height - MARGIN, {
      width: RIGHT - MARGIN,
      align: 'center',
      lineBreak: false,
    });
    if (invoice.status === 'void') {
      doc.save();
      doc.rotate(-45, { origin: [PAGE.width / 2, PAGE.height / 2] });
      doc.font(BOLD).fontSize(160).fillColor('#cc0000').fillOpacity(0.18);
      doc.text('VOID', 0, PAGE.height / 2 - 80, { width: PAGE.width, align: 'center', lineBreak: false });
      doc.restore();
    }
    doc.page.margins.bottom = bottomMargin;
  }
  doc.end();
  return done;
}
