/**
 * A local SMTP server that keeps every alert email it is sent, for the suites that check what a
 * tenant's inbox would get (notifications, activity faults): one server set-up, not one per suite.
 */
import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

/** One email as received: the envelope's recipients, the raw message, and its headers and text decoded. */
export interface ReceivedMail {
  to: string[];
  raw: string;
  /** Header names lower-cased, folded lines unfolded. */
  headers: Record<string, string>;
  /** The plain-text body, quoted-printable decoded, with `\n` line ends. */
  text: string;
}

/** A running inbox: point the notifier at `smtp://127.0.0.1:<port>`. */
export interface SmtpInbox {
  port: number;
  mails: ReceivedMail[];
  close(): Promise<void>;
}

/** Decodes the plain-text body nodemailer writes (7bit or quoted-printable). */
function parseMail(raw: string, to: string[]): ReceivedMail {
  const split = raw.indexOf('\r\n\r\n');
  const headerText = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ');
  const headers: Record<string, string> = {};
  for (const line of headerText.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  let text = raw.slice(split + 4);
  if (/quoted-printable/i.test(headers['content-transfer-encoding'] ?? '')) {
    text = text.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
  return { to, raw, headers, text: text.replace(/\r\n/g, '\n') };
}

/** Starts an inbox on a free port of 127.0.0.1 (no AUTH, no STARTTLS). */
export function startSmtpInbox(): Promise<SmtpInbox> {
  const mails: ReceivedMail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push(parseMail(Buffer.concat(chunks).toString('utf8'), session.envelope.rcptTo.map((r) => r.address)));
        callback();
      });
    },
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.server.address() as AddressInfo;
      resolve({ port, mails, close: () => new Promise<void>((done) => server.close(() => done())) });
    });
  });
}
