import { ConfigError, loadConfig } from '../../src/config';

/** The config module names every bad variable, and never prints a secret's value. */
test('defaults apply and empty strings count as unset', () => {
  const config = loadConfig({ PORT: '', TEMPORAL_TASK_QUEUE: 'q' });
  expect(config.PORT).toBe(3000);
  expect(config.TEMPORAL_TASK_QUEUE).toBe('q');
  expect(config.DATA_DIR).toBe('.data');
});

test('a wrong value names the variable', () => {
  expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT="eighty"/);
  expect(() => loadConfig({ PORT: '70000', LOG_LEVEL: 'loud' })).toThrow(ConfigError);
});

test('secrets are named but never shown', () => {
  let message = '';
  try {
    loadConfig({ BILLING_ADMIN_KEY: 'short-secret', SMTP_URL: 'http://user:hunter2@mail', DATABASE_URL: 'mysql://u:p4ss@db' });
  } catch (err) {
    message = (err as Error).message;
  }
  expect(message).toMatch(/BILLING_ADMIN_KEY=\(value hidden\)/);
  expect(message).toMatch(/SMTP_URL=\(value hidden\)/);
  expect(message).toMatch(/DATABASE_URL=\(value hidden\)/);
  expect(message).not.toMatch(/short-secret|hunter2|p4ss/);
});
