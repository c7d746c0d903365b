import { useEffect, useState } from 'preact/hooks';
import { api } from './api';

/** `GET /dashboard/config`: what the API process knows that the app links to. */
export interface DashboardConfig {
  temporal_ui_url: string | null;
  namespace: string;
}

let cached: Promise<DashboardConfig> | undefined;

export function useConfig(): DashboardConfig | undefined {
  const [config, setConfig] = useState<DashboardConfig | undefined>();
  useEffect(() => {
    cached ??= api.get<DashboardConfig>('/dashboard/config');
    cached.then(setConfig, () => {
      cached = undefined;
    });
  }, []);
  return config;
}
