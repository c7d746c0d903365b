import { Client, Connection } from '@temporalio/client';

/** A Temporal client plus its connection, so callers can close what they opened. */
export interface TemporalHandle {
  client: Client;
  connection: Connection;
}

/** Connects the API (or a test) to Temporal. */
export async function connectTemporal(address: string, namespace: string): Promise<TemporalHandle> {
  const connection = await Connection.connect({ address });
  return { client: new Client({ connection, namespace }), connection };
}
