// The server extension's HTTP API and WebSockets (jobber_lab), as the seam between the two
// halves states them. Every request goes through ServerConnection, so the Jupyter server's
// token and XSRF checks apply as for any of JupyterLab's own requests.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One job, as the server lists it (newest first). */
export interface IJobRow {
  id: number;
  label: string | null;
  command: string;
  kind: 'command' | 'function';
  state: string;
  state_text: string;
  created: string | null;
  started: string | null;
  ended: string | null;
  elapsed_s: number | null;
  memory_now: number | null;
  memory_peak: number | null;
  memory_limit: number | null;
  cpu_limit: number | null;
  attempt: number | null;
  attempts: number | null;
  pending_reason: string | null;
  sweep: string | null;
  notify: boolean;
}

/** How many jobs are in each state. */
export type Counts = { [state: string]: number };

/** The identity the Jupyter server acts as. */
export interface IIdentity {
  configured: boolean;
  problem: string | null;
  hash: string;
  subject: string;
  source: 'setting' | 'JOBBER_CERT' | 'remote' | null;
  server: string | null;
  jobs_dir: string;
}

/** A message of the events socket. */
export type EventMessage =
  | { type: 'snapshot'; jobs: IJobRow[]; counts: Counts }
  | { type: 'job'; job: IJobRow; counts: Counts }
  | { type: 'removed'; id: number; counts: Counts }
  | { type: 'ended'; job: IJobRow; message: string; notify: boolean };

/** The states a job never leaves. */
export const FINAL_STATES = new Set([
  'exited',
  'failed',
  'stopped',
  'oom-killed',
  'timed-out'
]);

const settings = ServerConnection.makeSettings();

/**
 * Call the server extension; the error a user sees is the server's own sentence.
 *
 * @param path under /jobber/api/, e.g. 'jobs/12/stop'
 * @param init method and body
 * @returns the parsed JSON body, or null for an empty one (204)
 */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {}
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'jobber/api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch (error) {
      data = { message: text };
    }
  }
  if (!response.ok) {
    const message =
      (data && data.message) || `${response.status} ${response.statusText}`;
    throw new ServerConnection.ResponseError(response, message);
  }
  return data as T;
}

/**
 * The ws:// URL of one of the server extension's sockets, with the token where the
 * browser needs it (as @jupyterlab/services does for a kernel's channels).
 *
 * @param path under /jobber/api/, e.g. 'events'
 */
export function socketUrl(path: string): string {
  let url = URLExt.join(settings.wsUrl, 'jobber/api', path);
  if (settings.appendToken && settings.token !== '') {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

/** The sentence of an error, for the panel and notifications. */
export function errorText(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}
