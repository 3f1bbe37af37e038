// Prints vitest's JSON reports (one per vitest process that scripts/test runs: unit, own,
// census, kernel (lab-1) and lab-2 in test-results/) as the one closing line CI reads:
// "tests: N passed, M failed".
import fs from "node:fs";
const files = process.argv.slice(2);
if (files.length === 0) { console.error("summary: usage: summary.mjs REPORT.json..."); process.exit(1); }
const total = { passed: 0, failed: 0, skipped: 0, all: 0 };
let unreadable = false;
for (const file of files) {
  let report;
  try {
    report = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    console.error(`summary: cannot read the vitest report ${file}: ${err.message}`);
    unreadable = true;
    continue;
  }
  total.passed += report.numPassedTests;
  total.failed += report.numFailedTests;
  total.skipped += report.numPendingTests + report.numTodoTests;
  total.all += report.numTotalTests;
}
console.log(`tests: ${total.passed} passed, ${total.failed} failed`
  + (total.skipped ? `, ${total.skipped} skipped` : ""));
if (unreadable) process.exit(1);
if (total.all === 0) { console.error("summary: no test ran"); process.exit(1); }
