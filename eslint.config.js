// A small rule set on purpose (see issue "the basics"): promises are awaited or marked
// `void`, nothing unused, type-only imports say so. Type-aware: tsconfig.test.json holds the
// product and the tests in one program (each program costs a parse and a check of its own).
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "proto/gen/", "native/gen/", "native/addon/build/", "test-results/", "**/*.js", "**/*.mjs"] },
  {
    files: ["**/*.ts"],
    plugins: { "@typescript-eslint": tseslint.plugin },
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: ["./tsconfig.test.json", "./ui/tsconfig.json"], tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      "@typescript-eslint/consistent-type-imports": ["error", { fixStyle: "inline-type-imports" }],
    },
  },
);
