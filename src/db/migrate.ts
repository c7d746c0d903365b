import { loadConfigOrExit } from '../config';
import { createDb, migrateLatest } from './knex';
import { logger } from '../logger';

/** `npm run migrate`: applies pending migrations to `DATABASE_URL` (`--down` rolls back the last batch). */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  if (!config.DATABASE_URL) {
    process.stderr.write('DATABASE_URL is required for `npm run migrate` (npm start migrates its embedded database itself)\n');
    process.exit(78);
  }
  const db = createDb(config.DATABASE_URL);
  try {
    if (process.argv.includes('--down')) {
      const [, undone] = (await db.migrate.rollback()) as [number, string[]];
      logger.info({ undone }, 'migrations rolled back');
    } else {
      const applied = await migrateLatest(db);
      logger.info({ applied }, applied.length ? 'migrations applied' : 'schema up to date');
    }
  } finally {
    await db.destroy();
  }
}

void main().catch((err: unknown) => {
  logger.fatal({ err }, 'migration failed');
  process.exit(1);
});
