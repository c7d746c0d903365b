import fs from 'node:fs';
import path from 'node:path';

/**
 * The worked billing examples in `test/fixtures/scenarios/` (see its README.md), loaded by the
 * unit replay, the period tests and the integration replay alike, so they all read the same
 * files from inside the repository.
 *
 * A file is one of two kinds, told apart by a top-level key: a billing scenario has a `plan`
 * (a plan, a tenant and steps to replay), a period scenario has `periods` (anniversary cases).
 */
export const SCENARIO_DIR = path.resolve(__dirname, '../fixtures/scenarios');

/** The top-level key that tells a scenario file's kind. */
export type ScenarioKind = 'plan' | 'periods';

/** One scenario file, parsed. */
export interface ScenarioFile<T> {
  file: string;
  scenario: T;
}

/** Every `.json` file of the fixture folder, parsed, in name order. */
export function allScenarioFiles(): Array<ScenarioFile<Record<string, unknown>>> {
  return fs
    .readdirSync(SCENARIO_DIR)
    .filter((file) => file.endsWith('.json'))
    .sort()
    .map((file) => {
      const text = fs.readFileSync(path.join(SCENARIO_DIR, file), 'utf8');
      try {
        return { file, scenario: JSON.parse(text) as Record<string, unknown> };
      } catch (err) {
        // A broken fixture must fail loudly with its name, not drop out of the replay.
        throw new Error(`test/fixtures/scenarios/${file} is not valid JSON: ${(err as Error).message}`);
      }
    });
}

/**
 * The scenario files of one kind. Callers assert the list is not empty, so a missing or
 * misplaced folder fails the suite instead of letting it pass with nothing replayed.
 */
export function loadScenarios<T>(kind: ScenarioKind): Array<ScenarioFile<T>> {
  return allScenarioFiles()
    .filter(({ scenario }) => kind in scenario)
    .map(({ file, scenario }) => ({ file, scenario: scenario as T }));
}
