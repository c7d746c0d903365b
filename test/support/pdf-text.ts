import { execFile } from 'node:child_process';

/**
 * The PDF's text, extracted by pdf-parse in a child Node process: pdfjs loads its worker with a
 * dynamic `import()`, which jest's module sandbox refuses.
 */
export async function pdfText(bytes: Buffer): Promise<string> {
  const script = `
    const { PDFParse } = require('pdf-parse');
    const chunks = [];
    process.stdin.on('data', (c) => chunks.push(c));
    process.stdin.on('end', async () => {
      const parser = new PDFParse({ data: new Uint8Array(Buffer.concat(chunks)) });
      try { process.stdout.write((await parser.getText()).text); } finally { await parser.destroy(); }
    });`;
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, ['-e', script], { cwd: process.cwd(), maxBuffer: 10 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(new Error(`pdf-parse failed: ${stderr || err.message}`)) : resolve(stdout),
    );
    child.stdin!.end(bytes);
  });
}
