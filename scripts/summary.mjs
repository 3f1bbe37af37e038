// Prints vitest's JSON report as the one closing line CI reads: "tests: N passed, M failed".
import fs from "node:fs";
const file = process.argv[2];
let report;
try {
  report = JSON.parse(fs.readFileSync(file, "utf8"));
} catch (err) {
  console.error(`summary: cannot read the vitest report ${file}: ${err.message}`);
  process.exit(1);
}
const skipped = report.numPendingTests + report.numTodoTests;
console.log(`tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed`
  + (skipped ? `, ${skipped} skipped` : ""));
if (report.numTotalTests === 0) { console.error("summary: no test ran"); process.exit(1); }
