// Lint is a CI gate with zero warnings: typescript-eslint's recommended rules over everything we ship.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Where a query written outside src/db belongs instead. */
const SQL_MESSAGE = 'SQL lives in src/db only: put the query in a repository function in src/db/ (named in billing words) and pass it the database handle.';

/** Import patterns of these sibling layers of src/ (from a file one folder below src/). */
const UPPER = (...layers) => layers.flatMap((layer) => [`../${layer}`, `../${layer}/*`]);

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', '.data/', '.temporal/', 'coverage/', '.test-stack/', '.build/', 'clients/*/dist/', 'clients/*/.test-build/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', require: 'readonly', module: 'writable', __dirname: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', fetch: 'readonly', AbortController: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Tests read JSON bodies of many shapes; `any` there is clearer than a type per response.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  // Dependencies point down: domain and contracts (pure rules, shared shapes) < db, notifications,
  // invoices (I/O over them) < activities and workflows < api and workers (the processes).
  // SQL lives in src/db only: every other layer (the API and its dashboard, activities,
  // notifications, invoices, workers) passes the database handle to repository functions and never
  // queries through it, so every statement, its locks and its transaction sit beside the other
  // statements on the same tables, where they can be read and tested together.
  {
    files: ['src/**/*.ts'],
    ignores: ['src/db/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': ['error', {
        paths: ['knex', 'pg'].map((name) => ({ name, allowTypeImports: true, message: SQL_MESSAGE })),
        patterns: [{ group: ['knex/*', 'pg/*', 'pg-*'], allowTypeImports: true, message: SQL_MESSAGE }],
      }],
      'no-restricted-syntax': ['error',
        ...[
          "CallExpression[callee.name='db']",
          "CallExpression[callee.property.name='db']",
          "CallExpression[callee.name='trx']",
          "CallExpression[callee.name='knex']",
          "CallExpression[callee.property.name='raw']",
          "CallExpression[callee.property.name='transaction']",
        ].map((selector) => ({ selector, message: SQL_MESSAGE })),
      ],
    },
  },
  {
    files: ['src/domain/**/*.ts', 'src/contracts/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: [...UPPER('db', 'notifications', 'invoices', 'activities', 'workflows', 'api', 'workers', 'platform')], message: 'src/domain and src/contracts are the bottom layer: pure rules and shared shapes, no I/O.' }],
      }],
    },
  },
  {
    files: ['src/db/**/*.ts', 'src/notifications/**/*.ts', 'src/invoices/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ group: [...UPPER('activities', 'workflows', 'api', 'workers')], message: 'Repositories and notifications sit below activities, workflows and the API: share ids and shapes through src/contracts.' }],
      }],
    },
  },
  {
    files: ['src/activities/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: [...UPPER('api', 'workers')], message: 'Activities sit below the API and the worker process.' }] }],
    },
  },
  {
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['@temporalio/activity', '@temporalio/client', '@temporalio/worker', 'node:*', 'fs', 'path', 'crypto', 'pg', 'knex', 'express'], message: 'Workflow code must stay deterministic: import only @temporalio/workflow, pure modules and types.' },
          { group: ['../activities/*', '../activities'], allowTypeImports: true, message: 'Import activities as types only (proxyActivities).' },
          { group: [...UPPER('db', 'notifications', 'invoices', 'api', 'workers', 'platform')], message: 'Workflow code imports pure modules only: domain, contracts, and activity types.' },
        ],
      }],
    },
  },
);
