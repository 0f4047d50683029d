// Parse AsyncAPI documents with the official parser, @asyncapi/parser. Reads a JSON list
// of documents on stdin, prints a JSON list with each document's diagnostics:
// [[{"severity", "code", "message", "path"}, ...], ...]. Severity is spectral's:
// 0 error, 1 warning, 2 information, 3 hint.
const { Parser } = require("@asyncapi/parser");

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const parser = new Parser();
  const found = [];
  for (const document of JSON.parse(Buffer.concat(chunks).toString("utf8"))) {
    const { diagnostics } = await parser.parse(JSON.stringify(document));
    found.push(
      diagnostics.map((d) => ({
        severity: d.severity,
        code: String(d.code),
        message: d.message,
        path: d.path.join("/"),
      })),
    );
  }
  process.stdout.write(JSON.stringify(found));
}

main().catch((error) => {
  process.stderr.write(String(error && error.stack ? error.stack : error));
  process.exit(1);
});
